"""redis: fresh fakeredis per test, one URL that always reaches the current test's state."""

from __future__ import annotations


def test_state_never_crosses_tests_through_any_client(project, pytester):
    project(
        """
        import asyncio
        import os
        import pytest
        import redis as redislib

        # An app with a module-level client built from the URL, as many apps have.
        APP = {}

        @pytest.mark.deps("redis", env={"REDIS_URL": "redis.url"})
        @pytest.mark.parametrize("n", range(3))
        def test_isolated(deps, n):
            if "client" not in APP:
                APP["client"] = redislib.Redis.from_url(os.environ["REDIS_URL"])
            app_client = APP["client"]
            assert app_client.dbsize() == 0
            assert deps.redis.client.dbsize() == 0
            app_client.set("written-by-app", n)
            assert deps.redis.client.get("written-by-app") == str(n).encode()
            async def read():
                return await deps.redis.async_client.get("written-by-app")
            assert asyncio.run(read()) == str(n).encode()
            deps.redis.client.lpush("q", "a")
            assert app_client.llen("q") == 1

        @pytest.mark.deps("redis")
        def test_many_databases(deps):
            # A whole server per test: every database index is the test's own.
            for db in (0, 15):
                client = __import__("fakeredis").FakeRedis(server=deps.redis.server, db=db)
                client.set("k", db)
            assert deps.redis.client.get("k") == b"0"
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=4)


def test_options_and_version_pins(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("redis:6.2", decode_responses=True)
        def test_it(deps):
            deps.redis.client.set("k", "v")
            assert deps.redis.client.get("k") == "v"
            assert deps.redis.server.version == (6, 2)
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_no_server_objects_accumulate_over_a_long_run(project, pytester):
    project(
        """
        import gc
        import pytest
        import fakeredis
        import redis as redislib

        @pytest.mark.deps("redis")
        @pytest.mark.parametrize("n", range(150))
        def test_use(deps, n):
            deps.redis.client.set("k", "x" * 1000)
            redislib.Redis.from_url(deps.redis.url).get("k")

        def test_zz_count_live_servers():
            gc.collect()
            live = [o for o in gc.get_objects() if isinstance(o, fakeredis.FakeServer)]
            # the idle server behind the URL, plus at most a couple not yet collected
            assert len(live) <= 3, len(live)
        """
    )
    pytester.runpytest("-p", "no:randomly", "-q").assert_outcomes(passed=151)


def test_url_endpoint_is_closed_at_session_end(project, pytester):
    project(
        """
        import socket
        import pytest

        PORT = []

        @pytest.mark.deps("redis")
        def test_it(deps):
            PORT.append(int(deps.redis.url.rsplit(":", 1)[1].split("/")[0]))
        """,
        conftest="""
        import socket

        import pytest

        @pytest.hookimpl(trylast=True)
        def pytest_unconfigure(config):
            from test_project import PORT
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", PORT[0])) != 0, "endpoint still listening"
            print("ENDPOINT CLOSED")
        """,
    )
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*ENDPOINT CLOSED*"])


def test_lua_scripts_and_locks_in_process_and_over_the_url(project, pytester):
    """What real apps use Redis for (rate limits, locks, queues): scripts through
    register_script (EVALSHA, then NOSCRIPT and EVAL) and redis-py's Lock, on the handle's
    client and on a client built from the URL, in the extra's fakeredis (with lupa)."""
    project("""
        import pytest
        import redis

        INCR = "return redis.call('incrby', KEYS[1], ARGV[1])"

        @pytest.mark.deps("redis")
        @pytest.mark.parametrize("how", ["handle", "url"])
        def test_scripts_and_locks(deps, how):
            client = deps.redis.client if how == "handle" else redis.Redis.from_url(deps.redis.url)
            script = client.register_script(INCR)
            assert [script(keys=["hits"], args=[2]) for _ in range(3)] == [2, 4, 6]
            client.script_flush()  # the next call gets NOSCRIPT and falls back to EVAL
            assert script(keys=["hits"], args=[1]) == 7
            with client.lock("job", timeout=5, blocking_timeout=1):
                other = client.lock("job", blocking_timeout=0.1)
                assert not other.acquire()
            assert client.lock("job", blocking_timeout=0.1).acquire()
            assert client.ping()  # the connection survived every error reply
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_the_fidelity_backend_fails_when_docker_py_is_missing(project, pytester):
    """--deps-backend redis=docker asked for by name runs or fails, naming what to
    install; with only the redis extra it must not skip every test and exit 0."""
    project("""
        import pytest

        @pytest.mark.deps("redis")
        def test_it(deps):
            pass
    """, conftest="""
        import sys

        for name in ("docker", "testcontainers"):  # as with only depfakes[redis] installed
            sys.modules[name] = None
    """)
    result = pytester.runpytest_subprocess("--deps-backend", "redis=docker")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*--deps-backend redis=docker was asked for but cannot serve "
                                 "here: docker-py/testcontainers could not be imported*pip "
                                 "install*"])


def test_url_clients_in_this_process_skip_tcp_and_other_processes_use_it(project, pytester):
    """Clients built from the URL here are served in process (no socket round trip to the
    endpoint's thread), module-level ones rebind to each test's server, sync and asyncio
    alike; a subprocess given the URL reaches the same state over TCP."""
    project(
        """
        import asyncio, subprocess, sys
        import pytest
        import redis, redis.asyncio

        APP = {}

        @pytest.mark.deps("redis")
        @pytest.mark.parametrize("n", range(3))
        def test_routed(deps, n):
            client = APP.setdefault("sync", redis.Redis.from_url(deps.redis.url))
            assert client.incr("hits") == 1  # the module-level client sees a fresh server
            pool_class = client.connection_pool.connection_class
            assert pool_class is not redis.Connection, pool_class

            async def use_async():
                aclient = redis.asyncio.Redis(host="127.0.0.1",
                                              port=int(deps.redis.url.rsplit(":", 1)[1][:-2]))
                assert await aclient.incr("hits") == 2
                assert aclient.connection_pool.connection_class is not \\
                    redis.asyncio.Connection
                await aclient.aclose()
            asyncio.run(use_async())

            child = "import redis, sys; redis.Redis.from_url(sys.argv[1]).set('child', 7)"
            subprocess.run([sys.executable, "-c", child, deps.redis.url], check=True,
                           timeout=60)
            assert deps.redis.client.get("child") == b"7"
            assert deps.redis.client.get("hits") == b"2"
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=3)
