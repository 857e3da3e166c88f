"""The shop's HTTP API, end to end: FastAPI's TestClient in front, real PostgreSQL and
MongoDB behind, Redis/S3/HTTP fakes, each test in its own state."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from shop.api import app
from shop.chats import ChatHistory
from shop.orders import OrderRepository

RATES = "https://api.rates.example.com"


@pytest.fixture
def client():
    with TestClient(app) as client:
        yield client


@pytest.mark.deps("redis", "s3", "http")
def test_checkout_endpoint_prices_stores_and_rate_limits(deps, client):
    deps.s3.create_bucket("shop-receipts")
    deps.http.mock.get(f"{RATES}/v1/latest").respond(200, json={"rates": {"USD": 1.1}})
    body = {"customer": "ana", "amount_eur": "20.00", "currency": "USD"}

    first = client.post("/checkout", json=body)

    assert first.status_code == 200
    assert first.json()["total"] == "22.00"
    assert [client.post("/checkout", json=body).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.deps("postgres")
def test_orders_endpoint_filters_by_array_tag(deps, client):
    engine = sqlalchemy.create_engine(deps.postgres.url)
    with Session(engine) as session:
        orders = OrderRepository(session)
        orders.place("ana", [{"sku": "mug", "qty": 1}], ["gift"])
        orders.place("bob", [{"sku": "tea", "qty": 2}], ["subscription"])
    engine.dispose()

    response = client.get("/orders", params={"tag": "gift"})

    assert response.status_code == 200
    assert [(o["customer"], o["tags"]) for o in response.json()] == [("ana", ["gift"])]


def _at(day: int) -> datetime:
    return datetime(2026, 11, day, 12, 0, tzinfo=timezone.utc)


@pytest.mark.deps("mongo")
def test_chat_search_keeps_only_matching_messages_newest_first(deps):
    history = ChatHistory(deps.mongo.db)
    history.add("ana", [("ana", "Where is my order?"), ("agent", "On its way")], _at(1))
    history.add("ana", [("ana", "I want a refund"), ("agent", "Refund sent")], _at(3))
    history.add("ana", [("ana", "Thanks!")], _at(4))
    history.add("bob", [("bob", "refund please")], _at(5))

    found = history.search("ana", "refund")

    assert [chat["at"].day for chat in found] == [3]
    assert [m["text"] for m in found[0]["messages"]] == ["I want a refund", "Refund sent"]


@pytest.mark.deps("mongo")
def test_chat_search_endpoint(deps, client):
    ChatHistory(deps.mongo.db).add("ana", [("ana", "Refund?"), ("agent", "Done")], _at(2))

    response = client.get("/chats/ana", params={"q": "refund"})

    assert response.status_code == 200
    assert [m["text"] for m in response.json()[0]["messages"]] == ["Refund?"]
