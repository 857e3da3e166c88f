"""A project that tests on psycopg2 keeps testing psycopg2: with depfakes[postgres-psycopg2]
(no psycopg 3) depfakes runs on psycopg2 itself, and Django, SQLAlchemy and the project's
code get psycopg2 too. Runs where psycopg 3 is not installed (make test-psycopg2)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from tests.servers import docker_ok, local_ok, need

if os.environ.get("DEPFAKES_TEST_PSYCOPG2"):  # make test-psycopg2: its venv has the extra
    assert importlib.util.find_spec("psycopg") is None, \
        "depfakes[postgres-psycopg2] brought psycopg 3, which Django would then prefer"
elif importlib.util.find_spec("psycopg") is not None:
    pytest.skip("psycopg 3 is installed here: make test-psycopg2 runs these without it",
                allow_module_level=True)
pytest.importorskip("psycopg2")

EXAMPLE = Path(__file__).parent.parent / "examples" / "django"


@pytest.fixture(autouse=True)
def _a_server():
    need(docker_ok() or local_ok(), "a Docker engine or PostgreSQL binaries")


def test_handles_speak_psycopg2(pytester):
    pytester.makepyfile("""
        import psycopg2
        import pytest
        import sqlalchemy as sa

        @pytest.mark.parametrize("run", range(3))
        @pytest.mark.deps("postgres")
        def test_writes_and_sees_nothing_of_the_last(deps, run):
            assert deps.postgres.url.startswith("postgresql+psycopg2://")
            conn = deps.postgres.connect()
            assert isinstance(conn, psycopg2.extensions.connection)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM items")
                assert cur.fetchone()[0] == 1  # the seed row only
                cur.execute("INSERT INTO items (name) VALUES ('new') RETURNING id")
                assert cur.fetchone()[0] == 2  # the sequence was rewound too
            conn.commit()
            with deps.postgres.engine.connect() as sa_conn:
                assert sa_conn.dialect.driver == "psycopg2"
                assert sa_conn.execute(sa.text("SELECT count(*) FROM items")).scalar() == 2
            copy = deps.postgres.create_database(template=None)
            assert psycopg2.connect(copy).server_version >= 120000
    """)
    pytester.makeconftest("""
        import psycopg2

        def pytest_depfakes_postgres_init(dsn, url):
            assert url.startswith("postgresql+psycopg2://")
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute("CREATE TABLE items (id serial PRIMARY KEY, name text)")
                cur.execute("INSERT INTO items (name) VALUES ('seed')")
    """)
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=3)


def test_django_stays_on_psycopg2(pytester):
    pytest.importorskip("pytest_django")
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    pytester.makepyfile(**{"tests/test_driver": """
        import pytest
        from django.db import connection

        @pytest.mark.django_db
        def test_driver():
            assert connection.Database.__name__ == "psycopg2"
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM catalog_category")
                assert cursor.fetchone()[0] == 2
    """})
    pytester.runpytest_subprocess("-W", "error").assert_outcomes(passed=1 + 28)
