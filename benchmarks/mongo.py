"""Per-test cost of depfakes' mongo next to the fixture people write by hand.

With a MongoDB server reachable (DEPFAKES_MONGO_URL, or Docker with DEPFAKES_MONGO_IMAGE)
it runs N tests that insert 10 documents each, twice: through @pytest.mark.deps("mongo")
(a database per test, copied from a seeded template, dropped in the background) and
through a hand-written fixture (a database per test, dropped synchronously after it), and
reports the median setup + teardown at the test and the ratio.

Without a server (as on depfakes' own CI machine, where no MongoDB can be installed) it
measures what can be measured: depfakes' per-test bookkeeping (naming, URL, handle, drop
queue) without any server round trip, and says that the rest was not measured.

    python benchmarks/mongo.py [--tests 200]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgres import run

DEPFAKES = """
import pytest

@pytest.mark.deps("mongo")
@pytest.mark.parametrize("n", range(N))
def test_insert(deps, n):
    deps.mongo.db.items.insert_many([{"n": i} for i in range(10)])
"""

CONFTEST = """
def pytest_depfakes_mongo_init(db):
    db.items.create_index("n")
"""

NAIVE = """
import os, uuid
import pytest
from pymongo import MongoClient

CLIENT = MongoClient(os.environ["BENCH_MONGO_URL"])

@pytest.fixture
def db():
    db = CLIENT["t_" + uuid.uuid4().hex[:10]]
    db.items.create_index("n")
    yield db
    CLIENT.drop_database(db.name)

@pytest.mark.parametrize("n", range(N))
def test_insert(db, n):
    db.items.insert_many([{"n": i} for i in range(10)])
"""


def bookkeeping(tests: int) -> float:
    """Median seconds of depfakes' own per-test work, with no server involved."""
    from depfakes.providers.mongo import MongoHandle, database_name

    drops: queue.Queue[str] = queue.Queue()
    samples = []
    for number in range(1, tests + 1):
        began = time.perf_counter()
        handle = MongoHandle(None, "mongodb://127.0.0.1:27017/",  # type: ignore[arg-type]
                             database_name("0123456789ab", number))
        handle.close()
        drops.put(handle.dbname)
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200)
    args = parser.parse_args()
    print(f"mongo: depfakes bookkeeping per test, no server: "
          f"{bookkeeping(args.tests * 10) * 1e6:.1f} us (median of {args.tests * 10})")

    url = os.environ.get("DEPFAKES_MONGO_URL")
    image = os.environ.get("DEPFAKES_MONGO_IMAGE")
    if not url and not (image and shutil.which("docker") and subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True).returncode == 0):
        print("mongo: no MongoDB server reachable; per-test overhead against a real server "
              "not measured here (the GitHub workflow measures it)")
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="depfakes-mongobench-") as tmp:
        ours = run(CONFTEST, DEPFAKES, args.tests, Path(tmp) / "depfakes", backend="")
        if not url:
            print("mongo: the hand-written baseline needs DEPFAKES_MONGO_URL; depfakes only:")
            print(f"depfakes  {statistics.median(ours['overhead'][1:]) * 1000:.2f} ms/test")
            return
        os.environ["BENCH_MONGO_URL"] = url
        naive = run("", NAIVE, args.tests, Path(tmp) / "naive", backend="")
    mine = statistics.median(ours["overhead"][1:]) * 1000
    theirs = statistics.median(naive["overhead"][1:]) * 1000
    print(f"depfakes {mine:.2f} ms/test   hand-written {theirs:.2f} ms/test   "
          f"ratio {mine / theirs:.3f}")


if __name__ == "__main__":
    main()
