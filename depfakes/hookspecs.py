"""Hooks that projects implement in their conftest.py to shape depfakes' servers."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_depfakes_postgres_init(dsn: str, url: str, config: pytest.Config) -> None:
    """Create the schema (and seed data) in the PostgreSQL template database.

    ``dsn`` is its libpq URL (``postgresql://``, for psycopg, psql, alembic's own URL
    handling), ``url`` the same for SQLAlchemy with the psycopg 3 driver
    (``postgresql+psycopg://``: a bare ``postgresql://`` would make SQLAlchemy load
    psycopg2). Runs once per session; every test's database starts like the result.
    ``config`` is the session's (your own command-line options: ``config.getoption``);
    take only the arguments you need.
    """


@pytest.hookspec
def pytest_depfakes_postgres_template_key(config: pytest.Config) -> str | None:
    """What else the PostgreSQL template is built from, as text (the contents of files an
    init hook reads, say): a template kept by --deps-reuse is rebuilt when it changes.
    The init hooks' own source is part of the key already. Called from a background thread."""


@pytest.hookspec
def pytest_depfakes_declared(item: pytest.Item) -> list[str] | None:
    """Dependencies a plugin declares for ``item`` besides its markers and fixtures (the
    Django bridge: 'postgres' for a test that uses Django's database)."""


@pytest.hookspec
def pytest_depfakes_mongo_init(db: Any, config: pytest.Config) -> None:
    """Create collections, indexes and seed documents in the MongoDB template database
    (a pymongo ``Database``). Runs once per session; every test's database gets a copy."""


@pytest.hookspec
def pytest_depfakes_scrub_request(request: Any) -> None:
    """Scrub more from a vcrpy ``Request`` (in place) before it is written to a cassette.

    Runs after depfakes' own scrubbing, on what a test recorded only: replay and matching
    see requests as they are. Replace a value with ``depfakes.cassettes.PLACEHOLDER`` and
    a live request matches the recorded one whatever its value there.
    """


@pytest.hookspec
def pytest_depfakes_scrub_response(response: dict[str, Any]) -> None:
    """Scrub more from a response (vcrpy's dict: status, headers, body) before it is saved."""
