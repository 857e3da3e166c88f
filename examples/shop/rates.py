"""A client for a third-party exchange-rate API."""

from __future__ import annotations

from decimal import Decimal

import httpx


class RatesError(Exception):
    pass


class RatesClient:
    def __init__(self, base_url: str, api_key: str = "demo") -> None:
        self.http = httpx.Client(base_url=base_url, headers={"X-Api-Key": api_key}, timeout=5)

    def convert(self, amount: Decimal, source: str, target: str) -> Decimal:
        if source == target:
            return amount
        response = self.http.get("/v1/latest", params={"base": source, "symbols": target})
        if response.status_code == 429:
            raise RatesError("rate API quota exceeded")
        response.raise_for_status()
        rate = Decimal(str(response.json()["rates"][target]))
        return (amount * rate).quantize(Decimal("0.01"))
