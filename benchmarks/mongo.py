"""Per-test cost of depfakes' mongo next to what people write instead, in one run.

N tests each write 10 documents and read them back, on a schema as a real app has it (four
collections with indexes and seed documents, built by the init hook):

- depfakes: a database per test, copied from the template the init hook built once;
- hand-written: a pymongo fixture that runs the same init for every test's database and
  drops it after the test (what teams write around a shared server);
- mongomock-ng: an in-memory fake per test, init run per test (no server at all).

Both real-server variants use the same server: DEPFAKES_MONGO_URL when set, else a
SecantusDB process (a MongoDB-wire server from PyPI) started here.

    python benchmarks/mongo.py [--tests 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgres import run

INIT = """
def init(db):
    for name in ("users", "orders", "events", "settings"):
        db[name].create_index("n")
        db[name].create_index([("owner", 1), ("at", -1)])
    db.settings.insert_many([{"key": f"k{i}", "n": i} for i in range(5)])
"""

BODY = """
    db.items.insert_many([{"n": i, "owner": n} for i in range(10)])
    assert db.items.count_documents({"owner": n}) == 10
    assert db.settings.count_documents({}) == 5
"""

DEPFAKES = """
import pytest

@pytest.mark.deps("mongo")
@pytest.mark.parametrize("n", range(N))
def test_write(deps, n):
    db = deps.mongo.db
""" + BODY

CONFTEST = INIT + """
def pytest_depfakes_mongo_init(db):
    init(db)
"""

NAIVE = """
import os, uuid
import pytest
from pymongo import MongoClient

CLIENT = MongoClient(os.environ["BENCH_MONGO_URL"])
""" + INIT + """
@pytest.fixture
def db():
    db = CLIENT["t_" + uuid.uuid4().hex[:10]]
    init(db)
    yield db
    CLIENT.drop_database(db.name)

@pytest.mark.parametrize("n", range(N))
def test_write(db, n):
""" + BODY

MONGOMOCK = """
import pytest
import mongomock_ng
""" + INIT + """
@pytest.fixture
def db():
    db = mongomock_ng.MongoClient()["t"]
    init(db)
    return db

@pytest.mark.parametrize("n", range(N))
def test_write(db, n):
""" + BODY


@contextlib.contextmanager
def secantus_server() -> Iterator[str]:
    """A SecantusDB process on a free loopback port, with its own empty config."""
    from depfakes.backends.local import free_port
    from depfakes.backends.secantus import Secantus
    from depfakes.providers.mongo import _ping

    with tempfile.TemporaryDirectory(prefix="depfakes-mongobench-server-") as tmp:
        port = free_port()
        launch = Secantus().prepare(Path(tmp), port, None)
        proc = subprocess.Popen(launch.command, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    _ping(launch.url, timeout_ms=200)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("secantusd-py did not start") from None
                    time.sleep(0.05)
            yield launch.url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def measure(url: str, tests: int, tmp: Path) -> dict[str, float]:
    os.environ["BENCH_MONGO_URL"] = url
    os.environ["DEPFAKES_MONGO_URL"] = url
    results = {
        "depfakes": run(CONFTEST, DEPFAKES, tests, tmp / "depfakes", backend="mongo=url"),
        "hand-written": run("", NAIVE, tests, tmp / "naive", backend=""),
        "mongomock-ng": run("", MONGOMOCK, tests, tmp / "mongomock", backend=""),
    }
    return {name: statistics.median(result["overhead"][1:]) * 1000
            for name, result in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    url = os.environ.get("DEPFAKES_MONGO_URL")
    with tempfile.TemporaryDirectory(prefix="depfakes-mongobench-") as tmp, (
            contextlib.nullcontext(url) if url else secantus_server()) as server:
        medians = measure(server, args.tests, Path(tmp))
    medians["server"] = "DEPFAKES_MONGO_URL" if url else "secantus"  # type: ignore[assignment]
    for name in ("depfakes", "hand-written", "mongomock-ng"):
        print(f"mongo {name:<13} {medians[name]:.2f} ms/test")
    print(f"mongo: depfakes / hand-written = {medians['depfakes'] / medians['hand-written']:.3f}"
          f" (server: {medians['server']})")
    if args.json:
        args.json.write_text(json.dumps(medians))


if __name__ == "__main__":
    main()
