"""pytest-xdist: one real server per dependency for the run, shared by every worker."""

from __future__ import annotations

import glob
import json
import tempfile

import psycopg  # here, not in the test: pytester's module snapshot would re-import it
import pytest
from test_postgres import IMAGE

from tests.servers import docker_ok as _docker_ok
from tests.servers import local_ok as _local_ok
from tests.servers import need as _need

pytestmark = pytest.mark.serial  # counts containers and temp dirs on a shared host

SUITE = """
import json, os, signal
import pytest

@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(8))
def test_isolated_on_the_shared_server(deps, n):
    conn = deps.postgres.connect()
    conn.execute("INSERT INTO items VALUES (%s)", (n,))
    conn.commit()
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    started = conn.execute("SELECT pg_postmaster_start_time()::text").fetchone()[0]
    with open(os.environ["SEEN"], "a") as fh:
        fh.write(json.dumps({"worker": os.environ["PYTEST_XDIST_WORKER"], "started": started,
                             "dsn": deps.postgres.dsn.rsplit("/", 1)[0] + "/postgres",
                             "db": deps.postgres.dbname}) + "\\n")

@pytest.mark.deps("postgres")
def test_crashing_worker(deps):
    os.kill(os.getpid(), signal.SIGKILL)  # as a segfault in a C extension would
"""

CONFTEST = """
import os, psycopg

def pytest_depfakes_postgres_init(dsn):
    with open(os.environ["BUILDS"], "a") as fh:
        fh.write("built\\n")
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE items (id int)")
"""


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_workers_share_one_server_and_the_controller_stops_it(backend, project, pytester,
                                                               tmp_path, monkeypatch):
    if backend == "docker":
        _need(_docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    else:
        _need(_local_ok(), "PostgreSQL binaries")
    seen, builds = tmp_path / "seen", tmp_path / "builds"
    monkeypatch.setenv("SEEN", str(seen))
    monkeypatch.setenv("BUILDS", str(builds))
    project(SUITE, conftest=CONFTEST)
    shared_dirs = set(glob.glob(f"{tempfile.gettempdir()}/depfakes-xdist-*"))

    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly",
                                           "--deps-backend", f"postgres={backend}")

    result.assert_outcomes(passed=8, failed=1)  # the crashed worker's test fails
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*test_crashing_worker*"])
    rows = [json.loads(line) for line in seen.read_text().splitlines()]
    assert {row["worker"] for row in rows} >= {"gw0", "gw1"}
    assert len({(row["dsn"], row["started"]) for row in rows}) == 1, "one server for the run"
    # Each test found its database empty (count == 1 after its insert); databases are
    # reset in place and handed on, never shared between workers.
    by_worker: dict[str, set[str]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], set()).add(row["db"])
    assert not set.intersection(*by_worker.values()), "a database is one worker's"
    assert builds.read_text().count("built") == 1, "the template is built once for the run"
    # The controller stopped the server after the last worker, and removed the run's files.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(rows[0]["dsn"], connect_timeout=2)
    assert set(glob.glob(f"{tempfile.gettempdir()}/depfakes-xdist-*")) == shared_dirs
