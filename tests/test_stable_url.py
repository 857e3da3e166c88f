"""depfakes_postgres_stable_url: an app that reads its settings at import (pydantic-settings,
a module-level engine) gets its database URL before conftest.py imports it, the same URL
for the whole session, and still a database like new for every test."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.servers import docker_ok, need

IMAGE = os.environ.get("DEPFAKES_POSTGRES_IMAGE")

# Built like the apps users bring: settings read once, at import; the engine made then.
APP = """
import sqlalchemy as sa
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    DATABASE_URL: str


settings = Settings()
engine = sa.create_engine(settings.DATABASE_URL)
"""

CONFTEST = """
import os

import pytest
import sqlalchemy as sa

import app  # before any test: the app reads DATABASE_URL now

URL_AT_IMPORT = os.environ["DATABASE_URL"]


def pytest_depfakes_postgres_init(url):
    # The init hook uses the app's own engine: it points at the database being built.
    with app.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE notes (id serial PRIMARY KEY, body text)"))
        conn.execute(sa.text("INSERT INTO notes (body) VALUES ('seed')"))


@pytest.fixture(scope="session")
def db():
    # As the FastAPI template's conftest: one Session for the whole run. Its read leaves a
    # transaction open across tests, which the reset must not end.
    from sqlalchemy.orm import Session

    with Session(app.engine) as session:
        session.execute(sa.text("SELECT count(*) FROM notes"))
        yield session


@pytest.fixture(scope="module")
def rows_at_module_start():
    # A module-scoped fixture, set up before any test's database is asked for.
    with app.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM notes")).scalar()
"""

TESTS = """
import json, os, pathlib

import pytest
import sqlalchemy as sa

import app
import conftest


def _log(deps):
    with open(os.environ["STABLE_LOG"], "a") as out:
        out.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                              "url": deps.postgres.url, "env": os.environ["DATABASE_URL"],
                              "at_import": conftest.URL_AT_IMPORT,
                              "app": app.settings.DATABASE_URL}) + "\\n")


@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(8))
def test_writes_through_the_app_engine(deps, n, rows_at_module_start):
    assert rows_at_module_start == 1
    _log(deps)
    with app.engine.connect() as conn:  # a pooled connection of the last test's, first
        assert conn.execute(sa.text("SELECT array_agg(body) FROM notes")).scalar() == ["seed"]
        assert conn.execute(sa.text("SELECT to_regclass('scratch')")).scalar() is None
    with app.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO notes (body) VALUES (:b)"), [{"b": f"t{n}"}] * 3)
        if n % 3 == 0:  # DDL: only a fresh clone undoes it
            conn.execute(sa.text("CREATE TABLE scratch (x int)"))
    with deps.postgres.engine.connect() as conn:  # depfakes' engine sees the same database
        assert conn.execute(sa.text("SELECT count(*) FROM notes")).scalar() == 4
    # The id sequence starts again too (seed row 1, the test's 2..4).
    with app.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT max(id) FROM notes")).scalar() == 4


@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(3))
def test_a_session_scoped_session_goes_on(deps, db, n):
    assert db.execute(sa.text("SELECT count(*) FROM notes")).scalar() == 1
    db.execute(sa.text("INSERT INTO notes (body) VALUES ('from the session')"))
    db.commit()
    assert db.execute(sa.text("SELECT count(*) FROM notes")).scalar() == 2  # left open


def test_without_a_declaration_the_url_stays(rows_at_module_start):
    assert os.environ["DATABASE_URL"] == conftest.URL_AT_IMPORT
"""

INI = """
depfakes_postgres_stable_url = true
depfakes_env = DATABASE_URL = postgres.url
"""


def _stable_project(project, pytester, tmp_path, monkeypatch):
    project(TESTS, conftest=CONFTEST, ini=INI, name="test_app")
    pytester.makepyfile(app=APP)
    log = tmp_path / "stable.log"
    monkeypatch.setenv("STABLE_LOG", str(log))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return log


def _entries(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("workers", [0, 2])
def test_settings_read_at_import_see_one_url_and_a_fresh_database_each_test(
        project, pytester, tmp_path, monkeypatch, postgres_server, workers):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    log = _stable_project(project, pytester, tmp_path, monkeypatch)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=url",
                                           *(["-n", str(workers)] if workers else []))
    result.assert_outcomes(passed=12)
    entries = _entries(log)
    by_worker: dict[str, set[str]] = {}
    for entry in entries:
        # What conftest.py's import read is what every test sees, and what the app holds.
        assert entry["url"] == entry["env"] == entry["at_import"] == entry["app"]
        by_worker.setdefault(entry["worker"], set()).add(entry["url"])
    assert all(len(urls) == 1 for urls in by_worker.values()), by_worker
    if workers:  # a database of its own per worker
        assert len({url for urls in by_worker.values() for url in urls}) == len(by_worker) == 2
    # Nothing is left on the server: stable databases, clones and templates are gone.
    import psycopg

    with psycopg.connect(postgres_server) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'depfakes%'"
                            ).fetchall()
    assert left == []


def test_the_docker_server_starts_once_before_the_conftest_under_xdist(
        project, pytester, tmp_path, monkeypatch):
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    log = _stable_project(project, pytester, tmp_path, monkeypatch)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker", "-n", "2")
    result.assert_outcomes(passed=12)
    servers = {entry["url"].rpartition("/")[0] for entry in _entries(log)}
    assert len(servers) == 1, servers  # the controller's, adopted by both workers
    # None of this run's is left (other tests' containers come and go meanwhile).
    assert _containers(f"io.depfakes.project={pytester.path}") == []


def test_collect_only_starts_nothing_and_the_url_reaches_nothing(
        project, pytester, tmp_path, monkeypatch):
    _stable_project(project, pytester, tmp_path, monkeypatch)
    pytester.makeconftest(CONFTEST + "\nprint('URL', URL_AT_IMPORT)\n")
    result = pytester.runpytest_subprocess("--collect-only", "-s", "-q")
    result.stdout.fnmatch_lines(["URL postgresql+psycopg://depfakes@depfakes-not-started"
                                 ".invalid:5432/depfakes_not_started"])
    assert result.ret == 0


def _containers(label: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())
