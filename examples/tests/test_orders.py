"""Orders against a real PostgreSQL: JSONB and ARRAY behave as in production."""

from __future__ import annotations

import os

import pytest
import sqlalchemy
from sqlalchemy.orm import Session

from shop.orders import Order, OrderRepository

LINES = [{"sku": "mug", "qty": 2}, {"sku": "tea", "qty": 1}]


@pytest.mark.deps("postgres", isolation="transaction")
def test_tagged_uses_array_containment(postgres):
    repo = OrderRepository(postgres.session)  # commit() inside becomes a savepoint
    repo.place("ana", LINES, ["gift", "express"])
    repo.place("bob", LINES, ["express"])
    assert [o.customer for o in repo.tagged("gift")] == ["ana"]
    assert [o.customer for o in repo.tagged("express")] == ["ana", "bob"]


@pytest.mark.deps("postgres", isolation="transaction")
def test_quantity_sums_inside_jsonb(postgres):
    repo = OrderRepository(postgres.session)
    repo.place("ana", LINES, [])
    repo.place("bob", [{"sku": "mug", "qty": 5}], [])
    assert repo.quantity_of("mug") == 7
    assert repo.quantity_of("cake") == 0


@pytest.mark.deps("postgres", isolation="transaction")
def test_every_test_starts_from_the_template(postgres):
    assert postgres.session.scalar(sqlalchemy.select(sqlalchemy.func.count(Order.id))) == 0


@pytest.mark.deps("postgres")
def test_app_with_its_own_engine_from_the_environment(deps):
    # The app builds its engine from DATABASE_URL (see pytest.ini's depfakes_env) and
    # commits for real; the test's database is its own, and dropped afterwards.
    engine = sqlalchemy.create_engine(os.environ["DATABASE_URL"])
    with Session(engine) as session:
        OrderRepository(session).place("carol", LINES, ["vip"])
    with Session(engine) as session:
        assert [o.customer for o in OrderRepository(session).tagged("vip")] == ["carol"]
    engine.dispose()
