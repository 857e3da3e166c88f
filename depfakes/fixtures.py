"""The fixtures: ``deps`` and one typed fixture per built-in dependency.

The plugin registers these. Teams that import fixtures explicitly can instead write
``from depfakes.fixtures import *`` in their root conftest.py: that also brings
``pytest_plugins = ["depfakes"]``, which loads the hooks when plugin autoload is off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from depfakes.deps import Deps, open_deps
from depfakes.marker import EMPTY_SPEC
from depfakes.network import restricted
from depfakes.state import DEPS_KEY, SPEC_KEY, session_state

if TYPE_CHECKING:
    from depfakes.providers.http import HttpHandle
    from depfakes.providers.mongo import MongoHandle
    from depfakes.providers.postgres import PostgresHandle
    from depfakes.providers.redis import RedisHandle
    from depfakes.providers.s3 import S3Handle

__all__ = [
    "_depfakes_autouse", "deps", "http", "mongo", "postgres", "pytest_plugins", "redis", "s3",
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


@pytest.fixture(autouse=True)
def _depfakes_autouse(request: pytest.FixtureRequest) -> Iterator[None]:
    # A marked test gets its dependencies (and their env vars) even if it never asks for
    # `deps`; autouse also puts them in place before the test's other fixtures run.
    spec = request.node.stash.get(SPEC_KEY, EMPTY_SPEC)
    settings = session_state(request.config).runtime.settings
    # The 'http' provider applies the network policy itself, with its cassette's exceptions.
    policy = (restricted("depfakes_block_network is on", settings.get("allow_hosts"))
              if "http" not in spec.versions and settings.get("block_network")
              else contextlib.nullcontext())
    with policy:
        if spec:
            request.getfixturevalue("deps")
        yield


@pytest.fixture(name="mongo")
def mongo(deps: Deps) -> MongoHandle:
    """This test's MongoDB database. Requesting it declares 'mongo'."""
    return deps.mongo


@pytest.fixture(name="postgres")
def postgres(deps: Deps) -> PostgresHandle:
    """This test's PostgreSQL database. Requesting it declares 'postgres'."""
    return deps.postgres


@pytest.fixture(name="redis")
def redis(deps: Deps) -> RedisHandle:
    """This test's Redis (fakeredis by default). Requesting it declares 'redis'."""
    return deps.redis


@pytest.fixture(name="s3")
def s3(deps: Deps) -> S3Handle:
    """This test's S3 (moto). Requesting it declares 's3'."""
    return deps.s3


@pytest.fixture(name="http")
def http(deps: Deps) -> HttpHandle:
    """This test's HTTP stubs (respx router, local server). Requesting it declares 'http'."""
    return deps.http


# Fixture name -> dependency it declares, for the collection hook.
DEPENDENCY_FIXTURES = {"mongo": mongo, "postgres": postgres, "redis": redis, "s3": s3, "http": http}
