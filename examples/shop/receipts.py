"""Receipts are stored in S3 and shared through presigned URLs."""

from __future__ import annotations

import json
from typing import Any

import boto3


class ReceiptStore:
    def __init__(self, bucket: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def save(self, order_id: str, receipt: dict[str, Any]) -> str:
        key = f"receipts/{order_id}.json"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(receipt).encode(),
                           ContentType="application/json")
        return key

    def load(self, order_id: str) -> dict[str, Any]:
        body = self.s3.get_object(Bucket=self.bucket, Key=f"receipts/{order_id}.json")["Body"]
        return json.loads(body.read())

    def share(self, order_id: str, expires: int = 300) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": f"receipts/{order_id}.json"},
            ExpiresIn=expires)

    def list_orders(self) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="receipts/")
        return sorted(obj["Key"].removeprefix("receipts/").removesuffix(".json")
                      for obj in listing.get("Contents", []))
