"""Ownership beyond one process: sessions on other hosts (PID namespaces here), kept
servers under --deps-reuse, what kill -9 leaves, and secrets in URLs and on disk.

Every test here starts real servers and reads host-wide state (the local server registry,
/dev/shm, the Docker engine), so they run one after another (make test: -m serial).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.servers import docker_forwarder, docker_ok, local_ok, need

pytestmark = pytest.mark.serial
IMAGE = os.environ.get("DEPFAKES_POSTGRES_IMAGE")

USES_POSTGRES = """
    import pytest

    @pytest.mark.deps("postgres")
    def test_it(deps):
        with deps.postgres.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
"""


def _pytest(cwd: Path, *args: str, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:randomly", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})


def _depfakes(*args: str, cwd: Path) -> str:
    return subprocess.run([sys.executable, "-m", "depfakes.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120).stdout


def _kept_servers(project: Path) -> list[dict]:
    from depfakes.backends.local import local_servers

    return [s for s in local_servers() if s["reuse_key"] and s["project"] == str(project)]


def _database_exists(admin_url: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


# --- sessions of other hosts on one server ------------------------------------------


def test_a_session_of_another_host_never_drops_a_live_sessions_databases(
        holder, postgres_server, project, pytester, monkeypatch, tmp_path):
    """Two CI shards on one DEPFAKES_POSTGRES_URL: the second (in its own PID namespace,
    where the first's pid means nothing) must leave the first's databases alone; once
    the first is killed, its lease is gone and the next session drops them."""
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    live = holder("url")
    dbname = (tmp_path / "holder-up").read_text().rsplit("/", 1)[1].split("?")[0]
    project(USES_POSTGRES, name="test_other")
    # The other shard's URL names another database: leases must hold server-wide.
    import psycopg

    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS ci_other")
        admin.execute("CREATE DATABASE ci_other")
    other_url = postgres_server.rsplit("/", 1)[0] + "/ci_other"
    try:
        for _ in range(2):
            other = _pytest(pytester.path, "test_other.py", "--deps-backend", "postgres=url",
                            env={"DEPFAKES_POSTGRES_URL": other_url},
                            prefix=("unshare", "-p", "-f", "--mount-proc"))
            assert other.returncode == 0, other.stdout + other.stderr
            assert _database_exists(postgres_server, dbname), "a live session's database was dropped"
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    after = _pytest(pytester.path, "test_other.py", "--deps-backend", "postgres=url")
    assert after.returncode == 0, after.stdout
    assert not _database_exists(postgres_server, dbname), "a dead session's database was kept"


# --- kept servers (--deps-reuse, local backend) --------------------------------------


REUSE = ("--deps-reuse", "--deps-backend", "postgres=local")


@pytest.fixture
def reuse_project(project, pytester, tmp_path):
    need(local_ok(), "PostgreSQL binaries")
    builds = tmp_path / "builds"
    project(USES_POSTGRES, conftest=f"""
        def pytest_depfakes_postgres_init(dsn):
            import psycopg
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE items (id serial PRIMARY KEY)")
            with open({str(builds)!r}, "a") as fh:
                fh.write("built\\n")
    """)
    yield pytester.path, builds
    _depfakes("down", "--project", str(pytester.path), cwd=pytester.path)
    assert _kept_servers(pytester.path) == []


def test_a_kept_server_that_does_not_answer_is_never_removed(reuse_project):
    path, _ = reuse_project
    assert _pytest(path, *REUSE).returncode == 0
    [kept] = _kept_servers(path)
    os.kill(kept["server_pid"], signal.SIGSTOP)  # alive, but answers nothing
    try:
        stuck = _pytest(path, *REUSE, env={"DEPFAKES_START_TIMEOUT": "2"})
        assert stuck.returncode == 1
        assert "runs but does not answer" in stuck.stdout
        assert "it was left as it is" in stuck.stdout
        assert (Path(kept["workdir"]) / "data" / "PG_VERSION").exists()
    finally:
        os.kill(kept["server_pid"], signal.SIGCONT)
    assert _pytest(path, *REUSE).returncode == 0
    assert [s["server_pid"] for s in _kept_servers(path)] == [kept["server_pid"]]


def test_down_project_stops_only_this_projects_kept_servers(reuse_project, tmp_path):
    path, _ = reuse_project
    assert _pytest(path, *REUSE).returncode == 0
    [kept] = _kept_servers(path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert "0 removed" in _depfakes("down", "--project", str(elsewhere), cwd=elsewhere)
    assert Path(f"/proc/{kept['server_pid']}").exists()
    out = _depfakes("down", "--project", cwd=path)
    assert f"removed local {kept['server_pid']}" in out
    assert not Path(f"/proc/{kept['server_pid']}").exists()
    assert not Path(kept["workdir"]).exists()


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_reuse_sessions_start_one_server_and_build_once(reuse_project, round_):
    path, builds = reuse_project

    def both() -> None:
        procs = [subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                   *REUSE], cwd=path, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], "\n".join(outputs)

    both()  # nothing kept yet: one starts the server, the other adopts it
    assert len(_kept_servers(path)) == 1
    assert builds.read_text().count("built") == 1
    conftest = path / "conftest.py"  # the init changed: one rebuilds, the other adopts
    conftest.write_text(conftest.read_text().replace("id serial", "id bigserial"))
    both()
    assert len(_kept_servers(path)) == 1
    assert builds.read_text().count("built") == 2


def test_a_kept_server_whose_process_died_is_replaced_and_tmpdir_is_left_alone(
        reuse_project):
    path, _ = reuse_project
    tmpdir = Path(tempfile.mkdtemp(prefix="depfakes-users-own-"))  # the user's TMPDIR
    tmpdir.chmod(0o755)  # as /tmp: the server's user must reach it
    precious = tmpdir / "precious.txt"
    precious.write_text("not depfakes'")
    env = {"TMPDIR": str(tmpdir)}
    try:
        assert _pytest(path, *REUSE, env=env).returncode == 0
        [kept] = _kept_servers(path)
        assert kept["workdir"].startswith(str(tmpdir))
        os.kill(kept["server_pid"], signal.SIGKILL)  # an OOM kill, say
        deadline = time.monotonic() + 10
        while Path(f"/proc/{kept['server_pid']}/cmdline").exists() and \
                Path(f"/proc/{kept['server_pid']}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        again = _pytest(path, *REUSE, env=env)
        assert again.returncode == 0, again.stdout
        [new] = _kept_servers(path)
        assert new["server_pid"] != kept["server_pid"]
        assert precious.read_text() == "not depfakes'"
    finally:
        _depfakes("down", "--project", str(path), cwd=path)
        assert precious.exists(), "depfakes removed a directory it did not create"
        precious.unlink()
        tmpdir.rmdir()


# --- what kill -9 leaves --------------------------------------------------------------


def _shm_state() -> tuple[set[str], set[str]]:
    dev_shm = {p.name for p in Path("/dev/shm").glob("PostgreSQL.*")}
    segments = {line.split()[1] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
                if line.split()[6] == "0"}  # nobody attached
    return dev_shm, segments


def test_kill_9_leaves_no_shared_memory_and_no_directories(holder, tmp_path):
    need(local_ok(), "PostgreSQL binaries")
    before = _shm_state()
    killed = holder("local")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    dirs = [p.parent for p in Path(tempfile.gettempdir()).glob("depfakes-*/.depfakes-owner")
            if json.loads(p.read_text())["pid"] == killed.pid]
    assert dirs, "the killed session's directory was not marked"
    sweeper = holder("local")  # starting a server sweeps what the killed one left
    try:
        assert not any(d.exists() for d in dirs)
        dev_shm, segments = _shm_state()
        assert dev_shm <= before[0], dev_shm - before[0]
        assert segments <= before[1], segments - before[1]
    finally:
        sweeper.send_signal(signal.SIGINT)
        sweeper.wait(timeout=60)


# --- secrets ----------------------------------------------------------------------------


def test_local_server_needs_a_password_only_the_session_can_read(project, pytester):
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import os, stat
        import psycopg
        import pytest
        from depfakes.backends.local import local_servers

        @pytest.mark.deps("postgres")
        def test_it(deps):
            pg = deps.postgres
            assert pg.password
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host=pg.host, port=pg.port, user="postgres", dbname=pg.dbname,
                                password="", connect_timeout=5)
            with pytest.raises(psycopg.OperationalError, match="password authentication"):
                psycopg.connect(host=pg.host, port=pg.port, user="postgres", dbname=pg.dbname,
                                password="guess", connect_timeout=5)
            [entry] = [s for s in local_servers() if s["owner_pid"] == os.getpid()]
            assert stat.S_IMODE(os.stat(entry["entry"]).st_mode) == 0o600
    """)
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=local")
    result.assert_outcomes(passed=1)


def test_url_parameters_are_kept_and_passwords_never_printed(postgres_server, project,
                                                              pytester, monkeypatch):
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_server)
    password = parts.password
    assert password
    bare = f"postgresql://postgres@{parts.hostname}:{parts.port}/postgres"
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            assert "application_name=probe" in deps.postgres.dsn
            with deps.postgres.connect() as conn:
                assert conn.execute("SHOW application_name").fetchone() == ("probe",)
    """)
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", f"{bare}?password={password}&application_name=probe")
    pytester.runpytest_subprocess("--deps-backend", "postgres=url").assert_outcomes(passed=1)
    # sslmode=require is honoured (this server has no TLS), and the password never shows.
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", f"{bare}?password={password}&sslmode=require")
    result = pytester.runpytest_subprocess("--deps-backend", "postgres=url")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*does not answer*SSL*"])
    doctor = subprocess.run([sys.executable, "-m", "depfakes.cli", "doctor"], cwd=pytester.path,
                            capture_output=True, text=True, timeout=120)
    assert "password=***" in doctor.stdout
    for output in (result.stdout.str(), result.stderr.str(), doctor.stdout, doctor.stderr):
        assert password not in output


# --- xdist, imports, reuse of every server -----------------------------------------------


def test_two_pins_of_one_image_share_one_server_and_template(project, pytester, tmp_path):
    """`postgres` and `postgres:15` resolving to one image: one server, the template built
    once, serially and under -n 2 (no name of one pin collides with the other's)."""
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    seen, built = tmp_path / "seen", tmp_path / "built"
    project(f"""
        import pytest

        def record(deps):
            start = deps.postgres.connect().execute(
                "SELECT pg_postmaster_start_time()::text").fetchone()[0]
            with open({str(seen)!r}, "a") as fh:
                fh.write(f"{{start}}\\n")

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(4))
        def test_default(deps, n):
            record(deps)

        @pytest.mark.deps("postgres:15")
        @pytest.mark.parametrize("n", range(4))
        def test_pinned(deps, n):
            record(deps)
    """, conftest=f"""
        def pytest_depfakes_postgres_init(dsn):
            with open({str(built)!r}, "a") as fh:
                fh.write("built\\n")
    """)
    for args in ([], ["-n", "2"]):
        seen.unlink(missing_ok=True)
        built.unlink(missing_ok=True)
        result = pytester.runpytest_subprocess(*args, "--deps-backend", "postgres=docker")
        result.assert_outcomes(passed=8)
        assert len(set(seen.read_text().splitlines())) == 1, args  # one server
        assert built.read_text().count("built") == 1, args  # one template build


@pytest.mark.parametrize("round_", range(3))
def test_parallel_starts_without_bytecode_cache(project, pytester, tmp_path, round_):
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import pytest

        @pytest.mark.deps("postgres", "s3", "redis", "http")
        def test_all(deps):
            deps.s3.create_bucket("bucket")
            deps.redis.client.set("k", 1)
    """)
    env = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-cache")}
    result = _pytest(pytester.path, "--deps-backend", "postgres=local", env=env)
    assert result.returncode == 0, result.stdout


def test_reuse_keeps_a_real_redis_too(project, pytester):
    redis_image = os.environ.get("DEPFAKES_REDIS_IMAGE", "local/redis:7")
    need(docker_ok() and subprocess.run(["docker", "image", "inspect", redis_image],
                                        capture_output=True).returncode == 0,
         f"a Docker engine with {redis_image}")
    seen = pytester.path / "seen"
    project(f"""
        import pytest

        @pytest.mark.deps("redis")
        def test_it(deps):
            with open({str(seen)!r}, "a") as fh:
                fh.write(deps.redis.client.info("server")["run_id"] + "\\n")
    """)
    args = ("--deps-reuse", "--deps-backend", "redis=docker")
    try:
        for _ in range(2):
            pytester.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert len(set(seen.read_text().split())) == 1  # the same server twice
    finally:
        out = _depfakes("down", "--project", str(pytester.path), cwd=pytester.path)
    assert "removed docker" in out


# --- a remote Docker engine -----------------------------------------------------------------


def test_a_remote_docker_engine_is_reached_at_its_address(project, pytester):
    """pytest on another network host, the engine at DOCKER_HOST=tcp://ENGINE:2375 (a
    network namespace and a veth pair; the local socket hidden): containers are reached at
    the engine's address, with a password, and removed afterwards."""
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    need(os.geteuid() == 0, "root (network namespaces)")
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_postgres(deps):
            assert deps.postgres.host == "10.231.7.1"
            assert deps.postgres.password
            with deps.postgres.connect() as conn:
                assert conn.execute("SELECT inet_client_addr()::text").fetchone() is not None

        @pytest.mark.deps("redis")
        def test_redis(deps):
            assert deps.redis.client.ping()
            assert "10.231.7.1" in deps.redis.url
    """)
    with docker_forwarder("dfk-remote", "10.231.7.1", "10.231.7.2") as run_in_namespace:
        result = run_in_namespace(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--deps-backend",
             "postgres=docker", "--deps-backend", "redis=docker"],
            cwd=pytester.path, env={"DOCKER_HOST": "tcp://10.231.7.1:2375"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.depfakes.pid"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == [], "containers were left behind"


# --- many machines: 4 hosts x 2 xdist workers on one server, and on one remote engine ---

SHARD_SUITE = """
    import os
    import pytest

    @pytest.mark.deps("postgres")
    @pytest.mark.parametrize("n", range(6))
    def test_isolated(deps, n):
        with deps.postgres.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS mine (host text, n int)")
            assert conn.execute("SELECT count(*) FROM mine").fetchone() == (0,)
            conn.execute("INSERT INTO mine VALUES (%s, %s)", (os.environ["SHARD"], n))
            conn.commit()
            assert conn.execute("SELECT host FROM mine").fetchall() == [(os.environ["SHARD"],)]
"""


def _run_shards(pytester, commands: list[tuple[list[str], dict[str, str]]]) -> None:
    procs = [subprocess.Popen(command, cwd=pytester.path, env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for command, env in commands]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert "6 passed" in output, output


def test_four_hosts_with_two_workers_each_share_one_server(postgres_server, project,
                                                           pytester):
    project(SHARD_SUITE)
    pytest_args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
                   "--deps-backend", "postgres=url"]
    _run_shards(pytester, [(["unshare", "-p", "-f", "--mount-proc", *pytest_args],
                            {"SHARD": f"host{i}", "DEPFAKES_POSTGRES_URL": postgres_server})
                           for i in range(4)])
    import psycopg

    with psycopg.connect(postgres_server) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'depfakes%'")
        assert left.fetchall() == [], "a host left databases behind"


def test_four_hosts_with_two_workers_each_share_one_remote_engine(project, pytester):
    need(docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    need(os.geteuid() == 0, "root (network namespaces)")
    import contextlib

    project(SHARD_SUITE)
    with contextlib.ExitStack() as hosts:
        runs = []
        for i in range(4):
            engine_ip, host_ip = f"10.231.8.{4 * i + 1}", f"10.231.8.{4 * i + 2}"
            run = hosts.enter_context(docker_forwarder(f"dfk-shard{i}", engine_ip, host_ip))
            runs.append((run, engine_ip))
        procs = []
        for i, (run, engine_ip) in enumerate(runs):
            procs.append(run.popen(
                ["unshare", "-p", "-f", "--mount-proc", sys.executable, "-m", "pytest", "-p",
                 "no:cacheprovider", "-n", "2", "--deps-backend", "postgres=docker"],
                cwd=pytester.path,
                env={"SHARD": f"host{i}", "DOCKER_HOST": f"tcp://{engine_ip}:2375"}))
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
        assert "6 passed" in output, output
    left = subprocess.run(["docker", "ps", "-aq", "--filter", "label=io.depfakes.pid"],
                          capture_output=True, text=True, check=True).stdout.split()
    assert left == [], "a host left containers behind"
