"""Database scopes wider than a test: scope="module" / "class" / "session" share one
database between the tests of that scope, and the next scope starts from the template,
with a URL per test and under a stable URL (where fixtures of that scope may use it)."""

from __future__ import annotations

import textwrap

import pytest

CONFTEST = """
import os

import psycopg
import pytest


def pytest_depfakes_postgres_init(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE notes (body text)")
        conn.execute("INSERT INTO notes VALUES ('seed')")


def bodies(dsn):
    with psycopg.connect(dsn) as conn:
        return sorted(row[0] for row in conn.execute("SELECT body FROM notes"))


def add(dsn, body):
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO notes VALUES (%s)", (body,))
"""

MODULE_SCOPED = """
import os
import pytest
from conftest import add, bodies

pytestmark = pytest.mark.deps("postgres", scope="module")
STABLE = bool(os.environ.get("DEPFAKES_POSTGRES_STABLE_URL"))


@pytest.fixture(scope="module")
def made_once():
    # Under a stable URL a module fixture writes to the module's database.
    if STABLE:
        add(os.environ["PGURL"], "fixture")
    return ["fixture"] if STABLE else []


def test_first(deps, made_once):
    assert bodies(deps.postgres.dsn) == sorted(["seed", *made_once])
    add(deps.postgres.dsn, "first")


def test_second(deps, made_once):
    assert bodies(deps.postgres.dsn) == sorted(["seed", "first", *made_once])
    add(deps.postgres.dsn, "second")
"""

FUNCTION_SCOPED = """
import pytest
from conftest import add, bodies


@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(2))
def test_fresh(deps, n):
    assert bodies(deps.postgres.dsn) == ["seed"]
    add(deps.postgres.dsn, f"f{n}")
"""

CLASS_SCOPED = """
import pytest
from conftest import add, bodies


@pytest.mark.deps("postgres", scope="class")
class TestOne:
    def test_a(self, deps):
        assert bodies(deps.postgres.dsn) == ["seed"]
        add(deps.postgres.dsn, "one")

    def test_b(self, deps):
        assert bodies(deps.postgres.dsn) == ["one", "seed"]


@pytest.mark.deps("postgres", scope="class")
class TestTwo:
    def test_a(self, deps):
        assert bodies(deps.postgres.dsn) == ["seed"]
"""


@pytest.mark.parametrize("stable", [False, True])
def test_module_and_class_scopes_share_a_database_and_the_next_scope_starts_fresh(
        project, pytester, postgres_server, monkeypatch, stable):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    if stable:
        monkeypatch.setenv("DEPFAKES_POSTGRES_STABLE_URL", "1")
        monkeypatch.setenv("DEPFAKES_ENV", "PGURL = postgres.dsn")
    else:
        monkeypatch.delenv("DEPFAKES_POSTGRES_STABLE_URL", raising=False)
    project(FUNCTION_SCOPED, conftest=CONFTEST, name="test_b_function")
    for name, source in {"test_a_module": MODULE_SCOPED, "test_c_module": MODULE_SCOPED,
                         "test_d_class": CLASS_SCOPED}.items():
        pytester.makepyfile(**{name: textwrap.dedent(source)})
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-backend",
                                           "postgres=url")
    result.assert_outcomes(passed=9)


def test_a_session_scope_keeps_one_database_for_every_test(project, pytester,
                                                           postgres_server, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    monkeypatch.setenv("DEPFAKES_POSTGRES_SCOPE", "session")  # the setting, not the marker
    project("""
        import pytest
        from conftest import add, bodies

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(3))
        def test_grows(deps, n):
            assert len(bodies(deps.postgres.dsn)) == n + 1
            add(deps.postgres.dsn, f"s{n}")
        """, conftest=CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-backend",
                                           "postgres=url")
    result.assert_outcomes(passed=3)


def test_declare_gives_a_directory_its_dependencies_and_names_a_bad_line(
        project, pytester, postgres_server, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    (pytester.path / "api").mkdir()
    (pytester.path / "api" / "test_api.py").write_text(textwrap.dedent("""
        import os

        def test_has_a_database():
            assert os.environ["DATABASE_URL"].endswith(os.environ["PGDATABASE"])
        """))
    (pytester.path / "unit").mkdir()
    (pytester.path / "unit" / "test_unit.py").write_text(textwrap.dedent("""
        import os

        def test_has_none():
            assert "DATABASE_URL" not in os.environ
        """))
    project("", conftest=CONFTEST, ini="""
        depfakes_declare = api = postgres
        depfakes_env =
            DATABASE_URL = postgres.dsn
            PGDATABASE = postgres.dbname
        """, name="test_empty")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=url")
    result.assert_outcomes(passed=2)
    pytester.makeini("[pytest]\ndepfakes_declare = apii = postgres\n")
    result = pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(["*depfakes_declare line 'apii = postgres': */apii does not "
                                 "exist (paths are relative to the rootdir, *)"])
    pytester.makeini("[pytest]\ndepfakes_declare = api = postgre\n")
    result = pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(["*depfakes_declare line 'api = postgre': unknown dependency "
                                 "'postgre' (did you mean 'postgres'?)*"])
