"""The shop's tests: real app code, fresh Redis/S3/HTTP fakes per test, no network."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from shop.checkout import TooManyCheckouts, checkout
from shop.ratelimit import RateLimiter
from shop.rates import RatesClient, RatesError
from shop.receipts import ReceiptStore

RATES = "https://api.rates.example.com"


@pytest.mark.deps("redis")
def test_rate_limiter_allows_then_blocks(redis):
    limiter = RateLimiter(redis.client, limit=2, window_seconds=30)
    assert [limiter.allow("ana") for _ in range(3)] == [True, True, False]
    assert 0 < limiter.remaining_ttl("ana") <= 30
    assert limiter.allow("bob")  # keys are per customer


@pytest.mark.deps("redis")
def test_rate_limiter_starts_clean_in_every_test(redis):
    assert redis.client.keys("*") == []


@pytest.mark.deps("s3")
def test_receipts_round_trip_and_presigned_url(s3):
    s3.create_bucket("shop-receipts")
    store = ReceiptStore("shop-receipts", endpoint_url=s3.endpoint_url)
    store.save("o-1", {"total": "12.50"})
    store.save("o-2", {"total": "3.00"})
    assert store.list_orders() == ["o-1", "o-2"]
    # The presigned URL works for any HTTP client, as it would against real S3.
    assert httpx.get(store.share("o-1")).json() == {"total": "12.50"}


@pytest.mark.deps("http")
def test_rates_client_converts(http):
    route = http.mock.get(f"{RATES}/v1/latest", params={"base": "EUR", "symbols": "USD"})
    route.respond(200, json={"rates": {"USD": 1.0826}})
    assert RatesClient(RATES).convert(Decimal("10.00"), "EUR", "USD") == Decimal("10.83")
    assert route.calls.last.request.headers["X-Api-Key"] == "demo"


@pytest.mark.deps("http")
def test_rates_client_reports_quota(http):
    http.mock.get(f"{RATES}/v1/latest").respond(429)
    with pytest.raises(RatesError, match="quota"):
        RatesClient(RATES).convert(Decimal("1"), "EUR", "GBP")


@pytest.mark.deps("http")
def test_rates_client_against_a_local_server(http):
    http.server.expect_oneshot_request("/v1/latest", query_string="base=EUR&symbols=JPY") \
        .respond_with_json({"rates": {"JPY": 161.2}})
    assert RatesClient(http.server.url_for("")).convert(Decimal("2"), "EUR", "JPY") == \
        Decimal("322.40")


@pytest.mark.deps("redis", "s3", "http")
def test_checkout_end_to_end(deps):
    deps.s3.create_bucket("shop-receipts")
    deps.http.mock.get(f"{RATES}/v1/latest").respond(200, json={"rates": {"USD": 1.1}})

    order = checkout("ana", Decimal("20.00"), "USD")  # settings come from the environment

    assert order["total"] == "22.00"
    stored = deps.s3.client.get_object(Bucket="shop-receipts",
                                       Key=f"receipts/{order['order_id']}.json")
    assert json.loads(stored["Body"].read()) == {"customer": "ana", "total": "22.00",
                                                 "currency": "USD"}
    assert httpx.get(order["receipt_url"]).json()["total"] == "22.00"
    assert deps.redis.client.get("ratelimit:ana") == b"1"


@pytest.mark.deps("redis", "s3", "http")
def test_checkout_is_rate_limited(deps):
    deps.s3.create_bucket("shop-receipts")
    deps.http.mock.get(f"{RATES}/v1/latest").respond(200, json={"rates": {"USD": 1.1}})
    for _ in range(3):
        checkout("bob", Decimal("1.00"), "USD")
    with pytest.raises(TooManyCheckouts):
        checkout("bob", Decimal("1.00"), "USD")


@pytest.mark.deps("http")
def test_rates_client_replays_a_recorded_call(http):
    # Replayed from cassettes/tests/test_shop/<this test>.yaml; the API key the client
    # sends is scrubbed on both sides, so the recorded placeholder still matches.
    assert RatesClient(RATES, api_key="real-key").convert(Decimal("100"), "EUR", "CHF") == \
        Decimal("93.12")
    assert http.cassette.play_count == 1
