"""Hooks that projects implement in their conftest.py to shape depfakes' servers."""

from __future__ import annotations

import pytest


@pytest.hookspec
def pytest_depfakes_postgres_init(dsn: str) -> None:
    """Create the schema (and seed data) in the PostgreSQL template database at ``dsn``.

    Runs once per session; every test's database is a clone of the result.
    """
