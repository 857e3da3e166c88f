"""A generated suite the size of a real project's: postgres, redis, s3 and http, alone and
together. Every test first checks that it sees none of another test's state, then leaves
some behind, so any leak fails whichever test runs next, in any order and on any worker.

    python benchmarks/suite.py DIR [--tests 400]   # writes the suite into DIR

``SUITE_SEED=<n>`` runs it in a shuffled order (same order on every xdist worker).
Used by tests/test_scale.py (same results serial, with -n 2, shuffled) and by
benchmarks/scale.py (wall times).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

CONFTEST = '''
import os
import random

import psycopg


def pytest_depfakes_postgres_init(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")


def pytest_collection_modifyitems(config, items):
    seed = os.environ.get("SUITE_SEED")
    if seed:
        random.Random(int(seed)).shuffle(items)
'''

# One module per kind; {count} tests each. Module-level clients mimic applications that
# create their client once: they must still land in the current test's state.
MODULES = {
    "test_postgres_suite": '''
import pytest
import sqlalchemy as sa

@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range({half}))
def test_database_mode(deps, n):
    conn = deps.postgres.connect()
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    conn.execute("INSERT INTO items VALUES (%s, 'database')", (n,))
    conn.commit()

@pytest.mark.deps("postgres", isolation="transaction")
@pytest.mark.parametrize("n", range({rest}))
def test_transaction_mode(deps, n):
    conn = deps.postgres.connection
    assert conn.execute(sa.text("SELECT count(*) FROM items")).scalar() == 0
    deps.postgres.session.execute(sa.text("INSERT INTO items VALUES (:n, 'txn')"), {{"n": n}})
    deps.postgres.session.commit()  # a savepoint: rolled back with the test

@pytest.mark.deps("postgres")
@pytest.mark.xfail(strict=True, raises=AssertionError)
def test_expected_failure(deps):
    conn = deps.postgres.connect()
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
''',
    "test_redis_suite": '''
import pytest
import redis

CLIENT = {{}}

def app_client(url):
    if "c" not in CLIENT:
        CLIENT["c"] = redis.Redis.from_url(url)
    return CLIENT["c"]

@pytest.mark.deps("redis")
@pytest.mark.parametrize("n", range({half}))
def test_handle_client(deps, n):
    assert deps.redis.client.dbsize() == 0
    deps.redis.client.set(f"key:{{n}}", n)
    deps.redis.client.lpush("shared-list", n)

@pytest.mark.deps("redis")
@pytest.mark.parametrize("n", range({rest}))
def test_app_global_client(deps, n):
    client = app_client(deps.redis.url)
    assert client.dbsize() == 0
    client.incr("counter")
    assert client.get("counter") == b"1"

@pytest.mark.deps("redis")
def test_skipped(deps):
    pytest.skip("skips the same way everywhere")
''',
    "test_s3_suite": '''
import pytest

@pytest.mark.deps("s3")
@pytest.mark.parametrize("n", range({count}))
def test_bucket_per_test(deps, n):
    s3 = deps.s3.client
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket="uploads")
    s3.put_object(Bucket="uploads", Key=f"file-{{n}}", Body=b"x" * n)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="uploads")["Contents"]] == [f"file-{{n}}"]
''',
    "test_http_suite": '''
import httpx
import pytest

@pytest.mark.deps("http")
@pytest.mark.parametrize("n", range({half}))
def test_respx_routes(deps, n):
    assert len(deps.http.mock.routes) == 0
    deps.http.mock.get(f"https://api.example.test/items/{{n}}").respond(json={{"n": n}})
    assert httpx.get(f"https://api.example.test/items/{{n}}").json() == {{"n": n}}

@pytest.mark.deps("http")
@pytest.mark.parametrize("n", range({rest}))
def test_local_server(deps, n):
    server = deps.http.server
    assert server.log == []
    server.expect_request(f"/items/{{n}}").respond_with_json({{"n": n}})
    assert httpx.get(server.url_for(f"/items/{{n}}")).json() == {{"n": n}}
''',
    "test_all_four_suite": '''
import httpx
import pytest

@pytest.mark.deps("postgres", "redis", "s3", "http")
@pytest.mark.parametrize("n", range({count}))
def test_checkout(deps, n):
    conn = deps.postgres.connect()
    assert conn.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert deps.redis.client.dbsize() == 0
    assert deps.s3.client.list_buckets()["Buckets"] == []
    deps.http.mock.post("https://pay.example.test/charge").respond(json={{"ok": True}})
    assert httpx.post("https://pay.example.test/charge").json() == {{"ok": True}}
    conn.execute("INSERT INTO items VALUES (%s, 'order')", (n,))
    conn.commit()
    deps.redis.client.set("last-order", n)
    deps.s3.client.create_bucket(Bucket="receipts")
''',
}


def write(directory: Path, tests: int = 400) -> int:
    """Write the suite into ``directory``; returns how many tests it holds."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "conftest.py").write_text(CONFTEST)
    (directory / "pytest.ini").write_text("[pytest]\nxfail_strict = true\n")
    count = tests // len(MODULES)
    total = 0
    for name, template in MODULES.items():
        extra = template.count("def test_expected_failure") + template.count("def test_skipped")
        size = count - extra  # the xfail/skip tests count towards the module's share
        body = template.format(count=size, half=size // 2, rest=size - size // 2)
        (directory / f"{name}.py").write_text(textwrap.dedent(body).lstrip())
        total += size + extra
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tests", type=int, default=400)
    args = parser.parse_args()
    print(f"wrote {write(args.directory, args.tests)} tests to {args.directory}")


if __name__ == "__main__":
    main()
