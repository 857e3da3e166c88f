"""Checkout: rate-limit the customer, price the order in their currency, store a receipt."""

from __future__ import annotations

import uuid
from decimal import Decimal

from shop.ratelimit import RateLimiter
from shop.rates import RatesClient
from shop.receipts import ReceiptStore
from shop.settings import Settings


class TooManyCheckouts(Exception):
    pass


def checkout(customer: str, amount_eur: Decimal, currency: str,
             settings: Settings | None = None) -> dict[str, str]:
    settings = settings or Settings.from_env()
    limiter = RateLimiter.from_url(settings.redis_url, limit=3, window_seconds=60)
    if not limiter.allow(customer):
        raise TooManyCheckouts(customer)
    total = RatesClient(settings.rates_api).convert(amount_eur, "EUR", currency)
    order_id = uuid.uuid4().hex[:12]
    store = ReceiptStore(settings.receipts_bucket, settings.s3_endpoint_url)
    store.save(order_id, {"customer": customer, "total": str(total), "currency": currency})
    return {"order_id": order_id, "total": str(total), "receipt_url": store.share(order_id)}
