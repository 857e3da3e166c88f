"""Settings come from the environment, as in most deployed apps."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    redis_url: str
    receipts_bucket: str
    s3_endpoint_url: str | None
    rates_api: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            redis_url=os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
            receipts_bucket=os.environ.get("RECEIPTS_BUCKET", "shop-receipts"),
            s3_endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            rates_api=os.environ.get("RATES_API", "https://api.rates.example.com"),
        )
