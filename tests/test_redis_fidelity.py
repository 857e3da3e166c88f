"""Fidelity runs: the same redis tests on fakeredis and on a real Redis container
(--deps-backend redis=docker), with the same per-test isolation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial
IMAGE = os.environ.get("DEPFAKES_REDIS_IMAGE")

SUITE = """
import asyncio, os
import pytest
import redis as redislib

@pytest.mark.deps("redis")
@pytest.mark.parametrize("n", range(3))
def test_every_test_starts_empty(deps, n):
    assert deps.redis.client.dbsize() == 0
    deps.redis.client.set(f"key-{n}", n)
    own = redislib.Redis.from_url(os.environ["REDIS_URL"])  # the app's own client
    assert own.get(f"key-{n}") == str(n).encode()

@pytest.mark.deps("redis")
def test_expire_nx_and_pipelines(deps):
    pipe = deps.redis.client.pipeline()
    pipe.incr("hits")
    pipe.expire("hits", 30, nx=True)
    pipe.expire("hits", 5, nx=True)  # NX: the first expiry stays
    assert pipe.execute() == [1, True, False]
    assert 25 < deps.redis.client.ttl("hits") <= 30

@pytest.mark.deps("redis", decode_responses=True)
def test_async_and_decoding(deps):
    async def go():
        await deps.redis.async_client.hset("h", mapping={"a": "1"})
        value = await deps.redis.async_client.hgetall("h")
        await deps.redis.async_client.aclose()
        return value
    assert asyncio.run(go()) == {"a": "1"}

@pytest.mark.deps("redis")
def test_backend_in_use(deps):
    assert (deps.redis.server is None) == (os.environ["EXPECT"] == "docker")
"""


def _need_docker() -> None:
    ok = IMAGE and shutil.which("docker") and subprocess.run(
        ["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Docker and DEPFAKES_REDIS_IMAGE")
        pytest.skip("needs a Docker engine and DEPFAKES_REDIS_IMAGE")


@pytest.mark.parametrize("backend", ["fake", "docker"])
def test_same_suite_both_ways(backend, project, pytester, monkeypatch):
    if backend == "docker":
        _need_docker()
    monkeypatch.setenv("EXPECT", backend)
    project(SUITE, ini="depfakes_env = REDIS_URL = redis.url")
    result = pytester.runpytest_subprocess("--deps-backend", f"redis={backend}",
                                           "-p", "no:randomly")
    result.assert_outcomes(passed=6)


def test_the_examples_redis_tests_on_a_real_redis(pytester):
    _need_docker()
    examples = Path(__file__).resolve().parents[1] / "examples"

    def run(backend: str) -> dict[str, int]:
        result = pytester.run(
            sys.executable, "-m", "pytest", str(examples), "-m", "redis and not postgres",
            "--deps-backend", f"redis={backend}", "-p", "no:randomly", "-p", "no:cacheprovider")
        return result.parseoutcomes()

    on_the_fake, on_real_redis = run("fake"), run("docker")
    assert on_real_redis == on_the_fake  # the same tests pass both ways
    assert on_real_redis["passed"] >= 4
    assert "failed" not in on_real_redis


def test_unknown_redis_backend(project, pytester):
    project("""
        import pytest

        @pytest.mark.deps("redis")
        def test_it(deps):
            pass
    """)
    result = pytester.runpytest_subprocess("--deps-backend", "redis=local")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--deps-backend redis=local: 'redis' can use auto, fake, "
                                 "docker"])
