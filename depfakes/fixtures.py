"""The fixtures: ``deps`` and one typed fixture per built-in dependency.

The plugin registers these. Teams that import fixtures explicitly can instead write
``from depfakes.fixtures import *`` in their root conftest.py: that also brings
``pytest_plugins = ["depfakes"]``, which loads the hooks when plugin autoload is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from depfakes import stable_url, vcr_compat
from depfakes.deps import Deps, open_deps, session_environment
from depfakes.errors import MarkerError
from depfakes.marker import EMPTY_SPEC, DepsSpec, spec_for
from depfakes.network import restricted
from depfakes.state import DEPS_KEY, SPEC_KEY, session_state

if TYPE_CHECKING:
    from depfakes.providers.http import HttpHandle
    from depfakes.providers.mongo import MongoHandle
    from depfakes.providers.postgres import PostgresHandle
    from depfakes.providers.redis import RedisHandle
    from depfakes.providers.s3 import S3Handle

__all__ = [
    "_depfakes_autouse", "_depfakes_session_env", "deps", "http", "mongo", "postgres",
    "pytest_plugins", "redis", "s3",
]

pytest_plugins = ["depfakes"]


@pytest.fixture
def deps(request: pytest.FixtureRequest) -> Iterator[Deps]:
    """The dependencies this test declared with @pytest.mark.deps(...)."""
    state = session_state(request.config)
    item = request.node
    assert isinstance(item, pytest.Item)
    spec = item.stash.get(SPEC_KEY, EMPTY_SPEC)
    with open_deps(item, spec, state.runtime, state.env_lines) as opened:
        item.stash[DEPS_KEY] = opened
        try:
            yield opened
        finally:
            del item.stash[DEPS_KEY]  # items live all session; handles must not


@pytest.fixture(autouse=True, scope="session")
def _depfakes_session_env(request: pytest.FixtureRequest) -> Iterator[None]:
    # depfakes_session_env: before any other session fixture (autouse ones come first),
    # so a project's own session fixtures find the server's address in the environment.
    state = session_state(request.config)
    stable_url.wait_for_database(request.session)  # depfakes_postgres_stable_url
    if not state.session_env_lines:
        yield
        return
    with pytest.MonkeyPatch.context() as monkeypatch:
        for var, value in session_environment(state.runtime, request.node,
                                              state.session_env_lines).items():
            monkeypatch.setenv(var, value)
        yield


@pytest.fixture(autouse=True)
def _depfakes_autouse(request: pytest.FixtureRequest) -> Iterator[None]:
    # A marked test gets its dependencies (and their env vars) even if it never asks for
    # `deps`; autouse also puts them in place before the test's other fixtures run.
    spec = current_spec(request.node)
    settings = session_state(request.config).runtime.settings
    marked = vcr_compat.marked_hosts(request.node)  # @pytest.mark.block_network
    why = ("@pytest.mark.block_network" if marked is not None
           else "depfakes_block_network is on")
    # The 'http' provider applies the network policy itself, with its cassette's exceptions.
    policy = (restricted(why, [*settings.get("allow_hosts"), *(marked or ())])
              if "http" not in spec.versions and (settings.get("block_network") or
                                                   marked is not None)
              else contextlib.nullcontext())
    with policy:
        if spec:
            request.getfixturevalue("deps")
        yield


def current_spec(item: pytest.Item) -> DepsSpec:
    """What the test declares now: markers added by any plugin's or conftest's collection
    hook count, whatever order those hooks ran in (read again when the test sets up)."""
    try:
        spec = spec_for(item, requested_dependencies(item))
    except MarkerError as exc:
        pytest.fail(f"depfakes: {item.nodeid}: {exc}", pytrace=False)
    item.stash[SPEC_KEY] = spec
    return spec


def requested_dependencies(item: pytest.Item) -> Iterator[str]:
    """Dependencies declared by requesting their fixture (ours, not a same-named one), and
    those a plugin declares (pytest_depfakes_declared)."""
    for names in item.config.hook.pytest_depfakes_declared(item=item):
        yield from names or ()
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return
    for name in DEPENDENCY_FIXTURES:
        definitions = fixture_info.name2fixturedefs.get(name)
        if definitions and getattr(definitions[-1].func, "__module__", "") == __name__:
            yield name


def _handle(request: pytest.FixtureRequest, name: str) -> Any:
    """The test's handle for ``name``; a dependency first requested at run time (e.g.
    ``request.getfixturevalue("redis")`` in a parametrized fixture) is acquired now, its
    server started if it was not, and released with the test."""
    opened: Deps = request.getfixturevalue("deps")
    if name not in opened:
        state = session_state(request.config)
        item = request.node
        assert isinstance(item, pytest.Item)
        late = open_deps(item, DepsSpec(versions={name: None}), state.runtime, state.env_lines)
        opened._add(late.__enter__())
        request.addfinalizer(lambda: late.__exit__(None, None, None))
    return getattr(opened, name)


@pytest.fixture(name="mongo")
def mongo(request: pytest.FixtureRequest) -> MongoHandle:
    """This test's MongoDB database. Requesting it declares 'mongo'."""
    handle: MongoHandle = _handle(request, "mongo")
    return handle


@pytest.fixture(name="postgres")
def postgres(request: pytest.FixtureRequest) -> PostgresHandle:
    """This test's PostgreSQL database. Requesting it declares 'postgres'."""
    handle: PostgresHandle = _handle(request, "postgres")
    return handle


@pytest.fixture(name="redis")
def redis(request: pytest.FixtureRequest) -> RedisHandle:
    """This test's Redis (fakeredis by default). Requesting it declares 'redis'."""
    handle: RedisHandle = _handle(request, "redis")
    return handle


@pytest.fixture(name="s3")
def s3(request: pytest.FixtureRequest) -> S3Handle:
    """This test's S3 (moto). Requesting it declares 's3'."""
    handle: S3Handle = _handle(request, "s3")
    return handle


@pytest.fixture(name="http")
def http(request: pytest.FixtureRequest) -> HttpHandle:
    """This test's HTTP stubs (respx router, local server). Requesting it declares 'http'."""
    handle: HttpHandle = _handle(request, "http")
    return handle


# Fixture name -> dependency it declares, for the collection hook.
DEPENDENCY_FIXTURES = {"mongo": mongo, "postgres": postgres, "redis": redis, "s3": s3, "http": http}
