"""respx's own pytest vocabulary, kept with depfakes installed: its ``respx_mock`` fixture
and ``respx`` marker stay respx's (respx's plugin serves them), and depfakes adds what a
depfakes test has: the routes answer httpx2 too, and the test declares ``http`` (the
network policy; a request no router answers fails as it does with respx alone, loopback
included). Suites that renamed the pair (the OpenAI SDK's vendored fork: ``respx2_mock``
and ``respx2``) name it in ``depfakes_respx_aliases`` instead of keeping a fork.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

FIXTURE, MARKER = "respx_mock", "respx"
_NAMES = pytest.StashKey[frozenset[str]]()


def register(config: pytest.Config, aliases: list[str]) -> None:
    """Serve ``FIXTURE:MARKER`` aliases, and watch respx_mock and them (needs respx)."""
    pairs = [_pair(alias) for alias in aliases]
    config.stash[_NAMES] = frozenset({FIXTURE, *(fixture for fixture, _ in pairs)})
    holder = types.ModuleType("depfakes_respx_aliases")
    for fixture, marker in pairs:
        setattr(holder, fixture, _aliased(fixture, marker))
        config.addinivalue_line("markers", f"{marker}(**options): respx's marker, for the "
                                f"{fixture} fixture (depfakes_respx_aliases)")
    config.pluginmanager.register(holder, "depfakes-respx-aliases")
    config.pluginmanager.register(sys.modules[__name__], "depfakes-respx")


def _pair(alias: str) -> tuple[str, str]:
    fixture, sep, marker = alias.partition(":")
    if not sep or not fixture.strip().isidentifier() or not marker.strip().isidentifier():
        raise ValueError(f"depfakes_respx_aliases: expected FIXTURE:MARKER (e.g. "
                         f"respx2_mock:respx2), got {alias!r}")
    return fixture.strip(), marker.strip()


def _aliased(fixture: str, marker: str) -> Any:
    def router(request: pytest.FixtureRequest) -> Iterator[Any]:
        """respx's respx_mock, under another name and marker."""
        from depfakes.respx_httpx2 import Httpx2MockRouter

        mark = request.node.get_closest_marker(marker)
        with Httpx2MockRouter(**(mark.kwargs if mark else {})) as mocked:
            yield mocked

    return pytest.fixture(name=fixture)(router)


@pytest.hookimpl
def pytest_depfakes_declared(item: pytest.Item) -> list[str] | None:
    names = item.config.stash.get(_NAMES, frozenset())
    return ["http"] if names & set(getattr(item, "fixturenames", ())) else None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    router = yield
    if fixturedef.argname in request.config.stash.get(_NAMES, frozenset()):
        import respx

        from depfakes import respx_httpx2

        if isinstance(router, respx.Router):  # answers httpx2 until the fixture ends
            attached = ExitStack()
            attached.enter_context(respx_httpx2.attached(router))
            fixturedef.addfinalizer(attached.close)
    return router
