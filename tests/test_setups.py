"""Real projects' pytest setups: markers added by collection hooks in any order, fixtures
that ask for a dependency at run time, `-W error`, and the libpq environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.servers import local_ok, need


def test_markers_added_by_collection_hooks_in_any_order(project, pytester):
    project("""
        def test_needs_redis(deps):
            deps.redis.client.set("k", 1)
            assert deps.redis.client.get("k") == b"1"

        def test_late(deps):
            deps.s3.create_bucket("bucket")
    """, conftest="""
        import pytest

        def pytest_collection_modifyitems(items):  # the usual way to mark a directory
            for item in items:
                if "needs_redis" in item.nodeid:
                    item.add_marker(pytest.mark.deps("redis"))

        class Late:
            @pytest.hookimpl(trylast=True)  # after depfakes' own collection hook
            def pytest_collection_modifyitems(self, items):
                for item in items:
                    if "late" in item.nodeid:
                        item.add_marker(pytest.mark.deps("s3"))

        def pytest_configure(config):
            config.pluginmanager.register(Late())
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)
    selected = pytester.runpytest_subprocess("-m", "redis")
    selected.assert_outcomes(passed=1, deselected=1)


def test_a_fixture_may_ask_for_a_dependency_at_run_time(project, pytester):
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import pytest

        @pytest.fixture(params=["memory", "redis", "postgres"])
        def store(request):
            if request.param == "memory":
                return {}
            if request.param == "redis":
                return request.getfixturevalue("redis").client
            return request.getfixturevalue("postgres").connect()

        def test_store_starts_empty(store):
            if isinstance(store, dict):
                assert store == {}
            elif hasattr(store, "dbsize"):
                assert store.dbsize() == 0
                store.set("leak", 1)
            else:
                store.execute("CREATE TABLE t (id int)")  # a fresh database every time
                store.commit()

        @pytest.mark.parametrize("n", range(2))
        def test_again(store, n):
            test_store_starts_empty(store)
    """)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=local")
    result.assert_outcomes(passed=9)


@pytest.mark.serial  # starts local servers and a kept one
def test_warnings_as_errors(project, pytester):
    """A project whose whole suite runs under -W error: no ResourceWarning from a
    server's process, under xdist, on the first --deps-reuse run, or from doctor."""
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(2))
        def test_it(deps, n):
            deps.postgres.connect().close()
    """, ini="addopts = -W error -p no:randomly")
    for args in (["-n", "2"], ["--deps-reuse"], ["--deps-reuse"]):
        result = pytester.runpytest_subprocess("--deps-backend", "postgres=local", *args)
        result.assert_outcomes(passed=2)
        assert "Warning" not in result.stdout.str() + result.stderr.str()
    try:
        doctor = subprocess.run([sys.executable, "-m", "depfakes.cli", "doctor"],
                                cwd=pytester.path, capture_output=True, text=True, timeout=120)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "postgres   declared by 2 test(s)" in doctor.stdout
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--project"],
                       cwd=pytester.path, capture_output=True, timeout=120)


def test_libpq_environment_in_one_line(project, pytester):
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import os, subprocess, sys
        import pytest

        @pytest.mark.deps("postgres")
        def test_subprocess_connects_through_pg_variables(deps):
            assert os.environ["PGDATABASE"] == deps.postgres.dbname
            assert os.environ["PGPORT"] == str(deps.postgres.port)
            # A worker subprocess that knows nothing but libpq's variables.
            out = subprocess.run([sys.executable, "-c", "import psycopg; print(psycopg.connect("
                                  "'').execute('SELECT current_database()').fetchone()[0])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            assert out == deps.postgres.dbname

        def test_restored_after():
            assert "PGDATABASE" not in os.environ
    """, ini="depfakes_env = PG* = postgres")
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=local", "-p",
                                           "no:randomly")
    result.assert_outcomes(passed=2)


@pytest.mark.serial  # keeps a server (--deps-reuse)
def test_the_init_hook_sees_the_projects_own_options(project, pytester):
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_schema(deps, request):
            with deps.postgres.connect() as conn:
                tables = {r[0] for r in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            expected = {"a"} if request.config.getoption("--migrate-until") == "a" else {"a", "b"}
            assert tables == expected
    """, conftest="""
        import psycopg

        def pytest_addoption(parser):
            parser.addoption("--migrate-until", default="b")

        def pytest_depfakes_postgres_init(dsn, config):
            with psycopg.connect(dsn) as conn:
                for table in "ab"[: "ab".index(config.getoption("--migrate-until")) + 1]:
                    conn.execute(f"CREATE TABLE {table} (id int)")
    """)
    for until in ("a", "b"):
        result = pytester.runpytest_subprocess("--deps-backend", "postgres=local",
                                               f"--migrate-until={until}")
        result.assert_outcomes(passed=1)
    try:  # a kept template is rebuilt when an option the hook read changes
        for until in ("a", "a", "b", "a"):
            result = pytester.runpytest_subprocess("--deps-backend", "postgres=local",
                                                   "--deps-reuse", f"--migrate-until={until}")
            result.assert_outcomes(passed=1)
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--project"],
                       cwd=pytester.path, capture_output=True, timeout=120)


def test_databases_of_ones_own_are_cleaned_up_with_the_test(postgres_server, project,
                                                            pytester, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    project("""
        import psycopg
        import pytest

        NAMES = []

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(4))
        def test_extra_databases(deps, n):
            empty = deps.postgres.create_database()
            with psycopg.connect(empty) as conn:  # empty: no tables of the template
                assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = "
                                    "'public'").fetchone() == (0,)
            with psycopg.connect(deps.postgres.admin_dsn) as admin:
                NAMES.append(admin.execute("SELECT current_database()").fetchone()[0])
                assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                                     (psycopg.conninfo.conninfo_to_dict(empty)["dbname"],)
                                     ).fetchone() == (1,)
    """)
    result = pytester.runpytest_subprocess("-n", "2", "--deps-backend", "postgres=url")
    result.assert_outcomes(passed=4)
    import psycopg

    with psycopg.connect(postgres_server) as conn:  # a shared server: nothing left on it
        assert conn.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                            "'depfakes%'").fetchall() == []


@pytest.mark.parametrize("selection", ['-m "not slow"', '-k "not uploads"'])
def test_a_selection_in_addopts_keeps_the_start_during_collection(project, pytester,
                                                                   selection):
    """-m / -k in addopts: servers of the tests the selection keeps still start while
    collection goes on (they used to wait for its end); deselected ones do not start."""
    project("""
        import pytest

        @pytest.mark.deps("redis")
        def test_counts(deps):
            assert deps.redis.client.incr("n") == 1

        @pytest.mark.slow
        @pytest.mark.deps("s3")
        def test_uploads(deps):
            pass
    """, conftest="""
        import pathlib
        import pytest
        from depfakes.state import session_state

        @pytest.hookimpl(tryfirst=True)
        def pytest_collection_modifyitems(config):  # collection is over, nothing deselected
            started = sorted(session_state(config).runtime.start_seconds)
            pathlib.Path("started.txt").write_text(",".join(started))
    """, ini=f"""
        addopts = {selection}
        markers = slow
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, deselected=1)
    assert (pytester.path / "started.txt").read_text() == "redis"


def test_a_start_thread_import_survives_a_test_swapping_warning_filters(tmp_path, monkeypatch):
    """requests silences urllib3's DependencyWarning with a global filter while it imports;
    pytest swaps a test's filters (-W error) in on the main thread meanwhile. The start's
    import must not fail with the warning as an error."""
    import threading
    import warnings

    from depfakes.runtime import _import

    (tmp_path / "swap_sync.py").write_text(
        "import threading\nsilenced = threading.Event()\nswapped = threading.Event()\n")
    (tmp_path / "like_requests.py").write_text(textwrap.dedent("""
        import warnings
        import swap_sync

        warnings.simplefilter("ignore", UserWarning)  # as requests does for urllib3's
        swap_sync.silenced.set()
        swap_sync.swapped.wait(10)
        warnings.warn("optional dependency missing", UserWarning)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import swap_sync

    errors: list[BaseException] = []

    def start() -> None:
        try:
            _import("like_requests")
        except BaseException as exc:
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the test before: -W error
        thread = threading.Thread(target=start)
        thread.start()
        assert swap_sync.silenced.wait(10)
    with warnings.catch_warnings():  # the next test: its own filters, the silencing lost
        warnings.simplefilter("error")
        swap_sync.swapped.set()
        thread.join(10)
    assert errors == []
    assert "like_requests" in sys.modules


def test_session_env_serves_a_suite_that_makes_its_own_databases(project, pytester):
    """A project whose own fixtures create a template and a database per test through
    libpq's variables (as procrastinate's do) moves over by configuration alone."""
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import os
        import psycopg
        import pytest

        @pytest.mark.parametrize("run", range(2))
        def test_own_database(own_db, run):
            with psycopg.connect("", dbname=own_db) as conn:
                conn.execute("INSERT INTO items VALUES (1)")
                assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1

        @pytest.mark.deps("postgres")
        def test_declared_gets_its_own(postgres):
            assert os.environ["PGDATABASE"] == postgres.dbname  # per test, as depfakes_env says

        def test_after_a_declared_one(own_db):
            assert os.environ["PGDATABASE"] == "postgres"  # the session's value again
    """, conftest="""
        import itertools
        import os

        import psycopg
        import pytest

        numbers = itertools.count()

        @pytest.fixture(scope="session")
        def own_template():
            assert os.environ["PGDATABASE"] == "postgres"
            with psycopg.connect("", autocommit=True) as conn:
                conn.execute("CREATE DATABASE own_template")
            with psycopg.connect("", dbname="own_template") as conn:
                conn.execute("CREATE TABLE items (id int)")
            return "own_template"

        @pytest.fixture
        def own_db(own_template):
            name = f"own_{next(numbers)}"
            with psycopg.connect("", autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE {own_template}")
            return name
    """, ini="depfakes_session_env = PG* = postgres\ndepfakes_env = PG* = postgres\n"
             "addopts = -p no:randomly --deps-backend postgres=local")
    pytester.runpytest_subprocess().assert_outcomes(passed=4)
