"""depfakes' postgres next to what users write by hand, in one run, on realistic work.

Every test adds 10 rows (a customer, 3 orders, 6 order lines) through the app's SQLAlchemy
ORM Session, commits, and reads the tables back (the counts fail if any row leaked from
another test). The schema is as wide as a real app's: the 3 tables of the workload (two
foreign keys, a composite index, two seed customers) and ``--tables`` more (default 100,
each with its own sequence), all built once by the init hook / the session fixture.

Variants, all on the same image:
  * depfakes database: ``deps.postgres.session`` (a database per test, reset in place);
  * depfakes transaction: ``isolation="transaction"``;
  * baseline template-clone: a session testcontainers ``PostgresContainer`` and per test
    ``CREATE DATABASE ... TEMPLATE`` plus an engine on it, ``DROP DATABASE`` after;
  * baseline savepoint: one session engine, per test a connection with an outer
    transaction and a Session joined with ``join_transaction_mode="create_savepoint"``;
  * control: the same pytest run with no database at all.

Per test = the time from the second test's start to the last one's, per test, net of the
control's: whole tests (setup, body, teardown, and whatever background work competes
with them), without the server's start and the template build before the first. "Start" is from
launching pytest to the first test's body: cold (a new container) and, for depfakes, with
``--deps-reuse`` adopting the container and template a previous run kept.

    DEPFAKES_POSTGRES_IMAGE=local/postgres:15 python -m benchmarks.postgres [--tests 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

# What a run reports: when its first test's body ran, when each test started, and each
# test's setup + teardown (pytest's report durations; benchmarks/mongo.py uses those).
COLLECTOR = '''
import json, os, time
FIRST, STARTS, SETUP, TEARDOWN = [], [], {}, {}

def pytest_runtest_logstart(nodeid, location):
    STARTS.append(time.time())

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
        json.dump({"first_call": FIRST[0] if FIRST else None, "starts": STARTS,
                   "overhead": overhead}, fh)
'''

# The app: its models, and its schema as wide as a real one's.
APP = '''
import os
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100), unique=True)
    orders: Mapped[list["Order"]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("customers.id"))
    number: Mapped[int]
    customer: Mapped[Customer] = relationship(back_populates="orders")
    lines: Mapped[list["OrderLine"]] = relationship()


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (sa.Index("ix_lines_order_sku", "order_id", "sku"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("orders.id"))
    sku: Mapped[str] = mapped_column(sa.String(20))
    quantity: Mapped[int]


for i in range(int(os.environ["BENCH_TABLES"])):
    sa.Table(f"other_{i}", Base.metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("name", sa.String(50)), sa.Column("created", sa.DateTime))


def build(url):
    """The schema and the two seed customers, on the database at ``url``."""
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(Customer), [{"name": "seed-1"}, {"name": "seed-2"}])
    engine.dispose()


def work(session, n):
    """One test's work: 10 rows, a commit, and a read that fails if anything leaked."""
    customer = Customer(name=f"customer-{n}")
    for number in range(3):
        order = Order(number=number, customer=customer)
        order.lines = [OrderLine(sku=f"sku-{n}-{number}-{i}", quantity=i) for i in range(2)]
        session.add(order)
    session.commit()
    counts = [session.scalar(sa.select(sa.func.count()).select_from(model))
              for model in (Customer, Order, OrderLine)]
    assert counts == [3, 3, 6], counts
'''

DEPFAKES_CONFTEST = '''
import app

def pytest_depfakes_postgres_init(dsn):
    app.build(dsn.replace("postgresql://", "postgresql+psycopg://"))
'''

DEPFAKES_DATABASE = """
import pytest, app

@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(N))
def test_orders(deps, n):
    app.work(deps.postgres.session, n)
"""

# An app that builds its engine at import from DATABASE_URL, under a stable URL.
DEPFAKES_STABLE_CONFTEST = DEPFAKES_CONFTEST + '''
import os
import sqlalchemy as sa

ENGINE = sa.create_engine(os.environ["DATABASE_URL"])
'''

DEPFAKES_STABLE = """
import pytest, app, conftest
from sqlalchemy.orm import Session

@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(N))
def test_orders(deps, n):
    with Session(conftest.ENGINE) as session:
        app.work(session, n)
"""
STABLE_ENV = {"DEPFAKES_POSTGRES_STABLE_URL": "1", "DEPFAKES_ENV": "DATABASE_URL = postgres.url"}

DEPFAKES_TRANSACTION = DEPFAKES_DATABASE.replace('"postgres")', '"postgres", '
                                                 'isolation="transaction")')

BASELINE_CONFTEST = '''
import os
import psycopg, pytest
from testcontainers.postgres import PostgresContainer
import app

@pytest.fixture(scope="session")
def pg():
    with PostgresContainer(os.environ["DEPFAKES_POSTGRES_IMAGE"], driver=None) as container:
        admin = container.get_connection_url()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE tpl")
        app.build(admin.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0]
                  + "/tpl")
        yield admin
'''

BASELINE_TEMPLATE = """
import uuid
import psycopg, pytest, sqlalchemy as sa
from sqlalchemy.orm import Session
import app

@pytest.fixture
def session(pg):
    name = "t_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE tpl")
    url = pg.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name
    engine = sa.create_engine(url)
    with Session(engine) as session:
        yield session
    engine.dispose()
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

@pytest.mark.parametrize("n", range(N))
def test_orders(session, n):
    app.work(session, n)
"""

BASELINE_SAVEPOINT = """
import pytest, sqlalchemy as sa
from sqlalchemy.orm import Session
import app

@pytest.fixture(scope="session")
def engine(pg):
    engine = sa.create_engine(pg.replace("postgresql://", "postgresql+psycopg://")
                              .rsplit("/", 1)[0] + "/tpl")
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
def test_orders(session, n):
    app.work(session, n)
"""

CONTROL = """
import pytest, app

@pytest.mark.parametrize("n", range(N))
def test_orders(n):
    pass
"""

# name: (conftest, tests, baseline it is compared with, --deps-reuse, environment)
VARIANTS: dict[str, tuple[str, str, str | None, bool, dict[str, str]]] = {
    "control": ("", CONTROL, None, False, {}),
    "depfakes database": (DEPFAKES_CONFTEST, DEPFAKES_DATABASE, "baseline template-clone",
                          False, {}),
    "depfakes db, --deps-reuse": (DEPFAKES_CONFTEST, DEPFAKES_DATABASE,
                                  "baseline template-clone", True, {}),
    "depfakes db, stable URL": (DEPFAKES_STABLE_CONFTEST, DEPFAKES_STABLE,
                                "baseline template-clone", False, STABLE_ENV),
    "depfakes transaction": (DEPFAKES_CONFTEST, DEPFAKES_TRANSACTION, "baseline savepoint",
                             False, {}),
    "baseline template-clone": (BASELINE_CONFTEST, BASELINE_TEMPLATE, None, False, {}),
    "baseline savepoint": (BASELINE_CONFTEST, BASELINE_SAVEPOINT, None, False, {}),
}


def run(conftest: str, tests_src: str, tests: int, workdir: Path,
        backend: str = "postgres=docker", reuse: bool = False,
        tables: int = 100, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``tests_src`` (``range(N)`` becomes ``range(tests)``) with ``conftest`` in a
    pytest of its own; its wall time, the seconds from launch to the first test body
    ("start") and pytest's output."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "conftest.py").write_text(COLLECTOR + textwrap.dedent(conftest))
    (workdir / "app.py").write_text(APP)
    (workdir / "test_bench.py").write_text(tests_src.replace("range(N)", f"range({tests})"))
    out = workdir / "out.json"
    env = {**os.environ, "BENCH_OUT": str(out), "BENCH_TABLES": str(tables),
           "TESTCONTAINERS_RYUK_DISABLED": "true", "DEPFAKES_BACKEND": backend,
           "DEPFAKES_REUSE": "1" if reuse else "0", "PYTHONPATH": str(workdir),
           **(extra_env or {})}
    launched = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-p", "no:xdist", str(workdir)],
                          cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.time() - launched
    if done.returncode != 0:
        sys.exit(f"pytest failed in {workdir}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}")
    result = json.loads(out.read_text())
    result["start"] = result["first_call"] - launched
    result["wall"] = wall
    result["output"] = done.stdout
    return result


def measure(tests: int, tables: int, tmp: Path) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, float]] = {}
    for name, (conftest, source, _, reuse, env) in VARIANTS.items():
        home = tmp / name.replace(" ", "_").replace(",", "")
        # With reuse, a first run keeps the server and the template; the run measured
        # adopts them (same directory), as a developer's second run does.
        if reuse:
            run(conftest, source, 1, home, reuse=True, tables=tables, extra_env=env)
        result = run(conftest, source, tests, home, reuse=reuse, tables=tables, extra_env=env)
        starts = result["starts"]
        rows[name] = {"start_s": result["start"], "wall_s": result["wall"],
                      "per_test_ms": (starts[-1] - starts[1]) / (len(starts) - 2) * 1000}
    control = rows["control"]["per_test_ms"]
    for row in rows.values():
        row["net_ms"] = row["per_test_ms"] - control
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--tables", type=int, default=100,
                        help="tables beyond the workload's three (default 100)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not os.environ.get("DEPFAKES_POSTGRES_IMAGE"):
        sys.exit("set DEPFAKES_POSTGRES_IMAGE (e.g. postgres:17-alpine or local/postgres:15)")
    try:
        with tempfile.TemporaryDirectory(prefix="depfakes-pgbench-") as tmp:
            rows = measure(args.tests, args.tables, Path(tmp))
    finally:  # the reuse variant kept its server on purpose; this benchmark's is not needed
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                       capture_output=True, check=False)

    print(f"postgres: {args.tests} tests, each 10 rows through the ORM + commit + read, "
          f"schema of {args.tables + 3} tables (image {os.environ['DEPFAKES_POSTGRES_IMAGE']})")
    print(f"{'variant':<28}{'start s':>9}{'net per test ms':>17}{'vs baseline':>13}")
    for name, row in rows.items():
        baseline = VARIANTS[name][2]
        ratio = f"{row['net_ms'] / rows[baseline]['net_ms']:.3f}" if baseline else "-"
        print(f"{name:<28}{row['start_s']:>9.2f}{row['net_ms']:>17.2f}{ratio:>13}")
    if args.json:
        args.json.write_text(json.dumps({"tests": args.tests, "tables": args.tables + 3,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
