"""Schema for the shop's database: built once into depfakes' template database."""

from __future__ import annotations

import sqlalchemy

from shop.orders import Base

# A project of its own (pytest-django, its own pytest.ini): run it from examples/django.
collect_ignore = ["django", "fastapi"]


def pytest_depfakes_postgres_init(dsn: str) -> None:
    engine = sqlalchemy.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    Base.metadata.create_all(engine)
    engine.dispose()
