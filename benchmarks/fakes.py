"""Per-test overhead of depfakes' in-process fakes next to each library used the naive way.

For every dependency it generates two test files with the same N tests, one using the
depfakes marker and one using the fixture people write by hand, runs each in its own
pytest process, and takes from pytest's own reports the time each test spent in setup,
call and teardown. Test bodies only fetch the client, so that time is the overhead; the
cassette variant replays one request per test (through a client made once per module).

    python benchmarks/fakes.py            # N=300
    python benchmarks/fakes.py --tests 1000 --json results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

COLLECTOR = '''
import json, os, pytest
DURATIONS = {}

def pytest_runtest_logreport(report):
    DURATIONS[report.nodeid] = DURATIONS.get(report.nodeid, 0.0) + report.duration

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as fh:
        json.dump(DURATIONS, fh)
'''

REDIS_WORK = """
            def work(make_client, make_async_client):
                client = make_client()
                for _ in range(200):
                    client.incr("hits")
                async def burst():
                    aclient = make_async_client()
                    for _ in range(4):
                        await asyncio.gather(*(aclient.incr("burst") for _ in range(50)))
                    await aclient.aclose()
                asyncio.run(burst())
                assert client.get("burst") == b"200"
                client.close()
"""

# One routed request per test, through the app's client (an SDK's), made once.
ROUTED = """
    import CLIENT_LIBRARY, pytest

    CLIENT = CLIENT_LIBRARY.Client()

    @pytest.mark.deps("http")
    @pytest.mark.parametrize("n", range(N))
    def test_it(deps, n):
        deps.http.mock.get("https://api.example.com/rates").respond(json={"USD": n})
        assert CLIENT.get("https://api.example.com/rates").json() == {"USD": n}
"""

VARIANTS: dict[str, dict[str, str]] = {
    "redis": {
        "depfakes": """
            import pytest

            @pytest.mark.deps("redis")
            @pytest.mark.parametrize("n", range(N))
            def test_it(deps, n):
                assert deps.redis.client is not None
        """,
        "naive": """
            import fakeredis, pytest

            @pytest.fixture
            def client():
                client = fakeredis.FakeRedis()
                yield client
                client.flushall()
                client.close()

            @pytest.mark.parametrize("n", range(N))
            def test_it(client, n):
                assert client is not None
        """,
    },
    # Real work over a client the app builds itself (a rate limiter's store): 200 commands
    # in a row, then 200 from asyncio, 50 at a time (redis.asyncio pools hold 100), against
    # the in-process FakeRedis fixture such a suite had before.
    "redis URL client, 400 commands": {
        "depfakes": """
            import asyncio, pytest, redis, redis.asyncio

            @pytest.mark.deps("redis")
            @pytest.mark.parametrize("n", range(N))
            def test_it(deps, n):
                work(lambda: redis.Redis.from_url(deps.redis.url),
                     lambda: redis.asyncio.Redis.from_url(deps.redis.url))
        """ + REDIS_WORK,
        "naive": """
            import asyncio, fakeredis, pytest

            @pytest.fixture
            def server():
                return fakeredis.FakeServer()

            @pytest.mark.parametrize("n", range(N))
            def test_it(server, n):
                work(lambda: fakeredis.FakeRedis(server=server),
                     lambda: fakeredis.FakeAsyncRedis(server=server))
        """ + REDIS_WORK,
    },
    "s3": {
        "depfakes": """
            import pytest

            @pytest.mark.deps("s3")
            @pytest.mark.parametrize("n", range(N))
            def test_it(deps, n):
                assert deps.s3.client is not None
        """,
        "naive": """
            import boto3, pytest
            from moto import mock_aws

            @pytest.fixture
            def client():
                with mock_aws():
                    yield boto3.client("s3", region_name="us-east-1")

            @pytest.mark.parametrize("n", range(N))
            def test_it(client, n):
                assert client is not None
        """,
    },
    "http": {
        "depfakes": """
            import pytest

            @pytest.mark.deps("http")
            @pytest.mark.parametrize("n", range(N))
            def test_it(deps, n):
                assert deps.http.mock is not None
        """,
        "naive": """
            import pytest, respx

            @pytest.fixture
            def router():
                with respx.mock(assert_all_called=False) as router:
                    yield router

            @pytest.mark.parametrize("n", range(N))
            def test_it(router, n):
                assert router is not None
        """,
    },
    "http route, httpx": {
        "depfakes": ROUTED.replace("CLIENT_LIBRARY", "httpx"),
        "naive": """
            import httpx, pytest, respx

            CLIENT = httpx.Client()

            @pytest.fixture
            def router():
                with respx.mock(assert_all_called=False) as router:
                    yield router

            @pytest.mark.parametrize("n", range(N))
            def test_it(router, n):
                router.get("https://api.example.com/rates").respond(json={"USD": n})
                assert CLIENT.get("https://api.example.com/rates").json() == {"USD": n}
        """,
    },
    "http route, httpx2": {
        "depfakes": ROUTED.replace("CLIENT_LIBRARY", "httpx2"),
        "naive": """
            import httpx2, pytest

            @pytest.fixture
            def client(request):
                n = request.node.callspec.params["n"]
                transport = httpx2.MockTransport(lambda r: httpx2.Response(200, json={"USD": n}))
                with httpx2.Client(transport=transport) as client:
                    yield client

            @pytest.mark.parametrize("n", range(N))
            def test_it(client, n):
                assert client.get("https://api.example.com/rates").json() == {"USD": n}
        """,
    },
    "http cassette replay": {
        "depfakes": """
            import httpx, pytest

            CLIENT = httpx.Client()  # a new client per request costs ~20 ms of TLS setup

            @pytest.mark.deps("http", cassette="api")
            @pytest.mark.parametrize("n", range(N))
            def test_it(deps, n):
                assert CLIENT.get("https://api.example.com/items").json() == {"items": [1, 2]}
        """,
        "naive": """
            import os, httpx, pytest, vcr

            @pytest.fixture
            def cassette():
                path = os.path.join(os.path.dirname(__file__), "cassettes", "api.yaml")
                with vcr.use_cassette(path, record_mode="none", allow_playback_repeats=True) as c:
                    yield c

            CLIENT = httpx.Client()

            @pytest.mark.parametrize("n", range(N))
            def test_it(cassette, n):
                assert CLIENT.get("https://api.example.com/items").json() == {"items": [1, 2]}
        """,
    },
}

CASSETTE = """\
interactions:
- request:
    body: null
    headers: {}
    method: GET
    uri: https://api.example.com/items
  response:
    body:
      string: '{"items": [1, 2]}'
    headers:
      Content-Type:
      - application/json
    status:
      code: 200
      message: OK
version: 1
"""


def measure(source: str, tests: int, workdir: Path) -> list[float]:
    """Run one generated test file; return each test's setup+call+teardown seconds."""
    workdir.mkdir(parents=True)
    (workdir / "cassettes").mkdir()
    (workdir / "cassettes" / "api.yaml").write_text(CASSETTE)
    (workdir / "conftest.py").write_text(COLLECTOR)
    (workdir / "test_bench.py").write_text(textwrap.dedent(source).replace("range(N)",
                                                                          f"range({tests})"))
    out = workdir / "durations.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-p", "no:xdist", str(workdir)],
        cwd=workdir, check=True, capture_output=True,
        env={**_environ(), "BENCH_OUT": str(out)},
    )
    durations = json.loads(out.read_text())
    # The first test pays one-time costs (imports, boto3 models); that is startup, not
    # per-test overhead, and pytest's depfakes summary reports it as setup.
    durations.pop("test_bench.py::test_it[0]", None)
    return list(durations.values())


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DEPFAKES_")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=300, help="tests per variant")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="depfakes-bench-") as tmp:
        for dependency, variants in VARIANTS.items():
            row: dict[str, float] = {}
            for variant, source in variants.items():
                seconds = measure(source, args.tests, Path(tmp) / dependency / variant)
                row[variant] = statistics.median(seconds) * 1000
            row["ratio"] = row["depfakes"] / row["naive"]
            results[dependency] = row

    print(f"per-test overhead, median of {args.tests} tests (setup + call + teardown)")
    print(f"{'dependency':<22}{'depfakes ms':>14}{'naive ms':>12}{'ratio':>9}")
    for dependency, row in results.items():
        print(f"{dependency:<22}{row['depfakes']:>14.3f}{row['naive']:>12.3f}"
              f"{row['ratio']:>9.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
