"""depfakes' postgres next to what users write by hand, in one run.

Baselines (from the articles in shared/seeds):
  * template-clone: a session testcontainers PostgresContainer, and per test a
    ``CREATE DATABASE ... TEMPLATE`` in the fixture and ``DROP DATABASE`` after it;
  * savepoint: one session engine, and per test a connection with an outer transaction and
    a Session joined with ``join_transaction_mode="create_savepoint"``.

Workload: every test inserts 10 rows and commits. Reported per variant: time from
launching pytest to the first test's body (run twice: first and second run), and the
per-test overhead at the test (fixture setup + teardown, pytest's own report durations),
median over N tests, with the ratio to the matching baseline.

    DEPFAKES_POSTGRES_IMAGE=local/postgres:15 python benchmarks/postgres.py [--tests 200]

The docker backend and the template-clone baseline use the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

COLLECTOR = '''
import json, os, time
SETUP, TEARDOWN, FIRST = {}, {}, []

def pytest_runtest_call(item):
    if not FIRST:
        FIRST.append(time.time())

def pytest_runtest_logreport(report):
    if report.when == "setup":
        SETUP[report.nodeid] = report.duration
    elif report.when == "teardown":
        TEARDOWN[report.nodeid] = report.duration

def pytest_sessionfinish(session):
    overhead = [SETUP[k] + TEARDOWN.get(k, 0.0) for k in SETUP]
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump({"first_call": FIRST[0] if FIRST else None, "overhead": overhead}, fh)
'''

SCHEMA = "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, n int)"

DEPFAKES_CONFTEST = f'''
import psycopg

def pytest_depfakes_postgres_init(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("{SCHEMA}")
'''

DEPFAKES_DATABASE = """
import psycopg, pytest

@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(N))
def test_insert(deps, n):
    with psycopg.connect(deps.postgres.dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items (name, n) VALUES (%s, %s)",
                            [(f"item-{i}", i) for i in range(10)])
        conn.commit()
"""

DEPFAKES_TRANSACTION = """
import pytest, sqlalchemy as sa

@pytest.mark.deps("postgres", isolation="transaction")
@pytest.mark.parametrize("n", range(N))
def test_insert(deps, n):
    session = deps.postgres.session
    for i in range(10):
        session.execute(sa.text("INSERT INTO items (name, n) VALUES (:a, :b)"),
                        {"a": f"item-{i}", "b": i})
    session.commit()
"""

BASELINE_CONFTEST = f'''
import os, uuid
import psycopg, pytest
from testcontainers.postgres import PostgresContainer

@pytest.fixture(scope="session")
def pg():
    with PostgresContainer(os.environ["DEPFAKES_POSTGRES_IMAGE"], driver=None) as container:
        admin = container.get_connection_url()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE tpl")
        with psycopg.connect(admin.rsplit("/", 1)[0] + "/tpl") as conn:
            conn.execute("{SCHEMA}")
        yield admin
'''

BASELINE_TEMPLATE = """
import uuid
import psycopg, pytest

@pytest.fixture
def dsn(pg):
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE tpl")
    yield pg.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

@pytest.mark.parametrize("n", range(N))
def test_insert(dsn, n):
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO items (name, n) VALUES (%s, %s)",
                            [(f"item-{i}", i) for i in range(10)])
        conn.commit()
"""

BASELINE_SAVEPOINT = """
import pytest, sqlalchemy as sa
from sqlalchemy.orm import Session

@pytest.fixture(scope="session")
def engine(pg):
    engine = sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
                              + "/tpl")
    yield engine
    engine.dispose()

@pytest.fixture
def session(engine):
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    yield session
    session.close()
    transaction.rollback()
    connection.close()

@pytest.mark.parametrize("n", range(N))
def test_insert(session, n):
    for i in range(10):
        session.execute(sa.text("INSERT INTO items (name, n) VALUES (:a, :b)"),
                        {"a": f"item-{i}", "b": i})
    session.commit()
"""

VARIANTS = {
    "depfakes database": (DEPFAKES_CONFTEST, DEPFAKES_DATABASE, "baseline template-clone"),
    "depfakes db, --deps-reuse": (DEPFAKES_CONFTEST, DEPFAKES_DATABASE,
                                  "baseline template-clone"),
    "depfakes transaction": (DEPFAKES_CONFTEST, DEPFAKES_TRANSACTION, "baseline savepoint"),
    "baseline template-clone": (BASELINE_CONFTEST, BASELINE_TEMPLATE, None),
    "baseline savepoint": (BASELINE_CONFTEST, BASELINE_SAVEPOINT, None),
}


def run(conftest: str, tests_src: str, tests: int, workdir: Path,
        backend: str = "postgres=docker", reuse: bool = False) -> dict[str, Any]:
    """Run ``tests_src`` (``range(N)`` becomes ``range(tests)``) with ``conftest`` in a
    pytest of its own; its per-test overhead, the seconds from launch to the first test
    body ("start") and pytest's output."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "conftest.py").write_text(COLLECTOR + textwrap.dedent(conftest))
    (workdir / "test_bench.py").write_text(tests_src.replace("range(N)", f"range({tests})"))
    out = workdir / "out.json"
    env = {**os.environ, "BENCH_OUT": str(out), "TESTCONTAINERS_RYUK_DISABLED": "true",
           "DEPFAKES_BACKEND": backend,
           "DEPFAKES_REUSE": "1" if reuse else "0"}
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-p", "no:xdist", str(workdir)],
                          cwd=workdir, env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    result["start"] = result["first_call"] - launched
    result["output"] = done.stdout
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not os.environ.get("DEPFAKES_POSTGRES_IMAGE"):
        sys.exit("set DEPFAKES_POSTGRES_IMAGE (e.g. postgres:17-alpine or local/postgres:15)")

    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="depfakes-pgbench-") as tmp:
        for name, (conftest, source, _) in VARIANTS.items():
            reuse = "reuse" in name
            # With reuse, the second run adopts the first run's server (same directory).
            first = run(conftest, source, 1, Path(tmp) / name / "first", reuse=reuse)
            second = run(conftest, source, 1, Path(tmp) / name / ("first" if reuse else
                                                                   "second"), reuse=reuse)
            many = run(conftest, source, args.tests, Path(tmp) / name / "many", reuse=reuse)
            overhead = many["overhead"][1:]  # the first test's setup is the server start
            rows[name] = {"start_first_s": first["start"], "start_second_s": second["start"],
                          "overhead_ms": statistics.median(overhead) * 1000}

    print(f"postgres, {args.tests} tests inserting 10 rows each "
          f"(image {os.environ['DEPFAKES_POSTGRES_IMAGE']})")
    print(f"{'variant':<26}{'start 1st s':>12}{'start 2nd s':>12}{'per-test ms':>13}"
          f"{'vs baseline':>13}")
    for name, row in rows.items():
        baseline = VARIANTS[name][2]
        ratio = f"{row['overhead_ms'] / rows[baseline]['overhead_ms']:.3f}" if baseline else "-"
        print(f"{name:<26}{row['start_first_s']:>12.2f}{row['start_second_s']:>12.2f}"
              f"{row['overhead_ms']:>13.2f}{ratio:>13}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    # The reuse variant kept its servers on purpose; this benchmark's are not needed.
    subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                   capture_output=True, check=False)


if __name__ == "__main__":
    main()
