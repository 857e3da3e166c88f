"""The shop's HTTP API (FastAPI): checkout, orders by tag, chat search."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from shop.checkout import TooManyCheckouts, checkout

app = FastAPI(title="shop")


class CheckoutRequest(BaseModel):
    customer: str
    amount_eur: Decimal
    currency: str


@app.post("/checkout")
def post_checkout(request: CheckoutRequest) -> dict[str, str]:
    try:
        return checkout(request.customer, request.amount_eur, request.currency)
    except TooManyCheckouts:
        raise HTTPException(status_code=429, detail="too many checkouts") from None


@app.get("/orders")
def orders_tagged(tag: str) -> list[dict[str, Any]]:
    import sqlalchemy
    from sqlalchemy.orm import Session

    from shop.orders import OrderRepository

    engine = sqlalchemy.create_engine(os.environ["DATABASE_URL"])
    try:
        with Session(engine) as session:
            return [{"id": order.id, "customer": order.customer, "tags": order.tags}
                    for order in OrderRepository(session).tagged(tag)]
    finally:
        engine.dispose()


@app.get("/chats/{customer}")
def chats(customer: str, q: str) -> list[dict[str, Any]]:
    from pymongo import MongoClient

    from shop.chats import ChatHistory

    with MongoClient(os.environ["MONGO_URL"]) as client:
        found = ChatHistory(client.get_default_database()).search(customer, q)
    return [{"at": chat["at"].isoformat(), "messages": chat["messages"]} for chat in found]
