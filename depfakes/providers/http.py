"""The ``http`` dependency: a respx router active for the test, and a local
pytest-httpserver started once per session on first use.

Unlike plain pytest-httpserver, a request the server did not expect, an error in a
handler, or an ordered/oneshot expectation left unmet fails the test.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from depfakes.providers.base import Option, Provider, StartContext

if TYPE_CHECKING:
    import httpx
    import respx
    from pytest_httpserver import HTTPServer


class HttpHandle:
    """What a test gets as ``deps.http``."""

    mock: respx.MockRouter

    cassette: Any = None
    record_mode: str = "none"

    def __init__(self, provider: HttpProvider, router: respx.MockRouter) -> None:
        self._provider = provider
        self.mock = router
        self.server_used = False

    @property
    def server(self) -> HTTPServer:
        """A pytest-httpserver ``HTTPServer`` on 127.0.0.1 (one per session, cleared per test)."""
        self.server_used = True
        return self._provider.server()

    def __repr__(self) -> str:
        return f"<HttpHandle routes={len(self.mock.routes)}>"


def _router_class() -> type[respx.MockRouter]:
    import respx
    from respx.models import AllMockedAssertionError

    class UnmatchedRequest(AllMockedAssertionError):
        """A request no route matched; subclassing keeps respx's multi-router fallback."""

    UnmatchedRequest.__qualname__ = UnmatchedRequest.__name__
    UnmatchedRequest.__module__ = __name__

    class Router(respx.MockRouter):
        loopback = respx.Route().pass_through()

        @contextmanager
        def resolver(self, request: httpx.Request) -> Iterator[Any]:
            try:
                with super().resolver(request) as resolved:
                    yield resolved
                    # Unstubbed loopback traffic (deps.http.server, containers) goes through.
                    if resolved.route is None and is_loopback(request.url.host):
                        resolved.route, resolved.response = self.loopback, request
            except AllMockedAssertionError as exc:
                if isinstance(exc, UnmatchedRequest):
                    raise
                raise UnmatchedRequest(_unmatched_message(request)) from None

    return Router


def is_loopback(host: str) -> bool:
    """Whether ``host`` is written as a loopback address (not: resolves to one)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unmatched_message(request: httpx.Request) -> str:
    method = request.method
    url = str(request.url)
    return (f"depfakes http: {method} {url} matched no route of deps.http.mock. Stub it, e.g. "
            f"deps.http.mock.{method.lower()}(\"{url}\").respond(200, json={{...}}), "
            "or send it to deps.http.server")


class HttpProvider(Provider):
    name = "http"
    handle_type = HttpHandle
    requires = ("respx", "httpx", "pytest_httpserver")
    extra = "http"
    options: ClassVar[Mapping[str, Option]] = {
        "assert_all_called": Option(False, "Fail the test if a respx route was never called.",
                                    type=bool),
        "base_url": Option(None, "Base URL that the test's respx routes are relative to.",
                           type=(str, type(None))),
    }

    def start(self, ctx: StartContext) -> None:
        self._router_class = _router_class()
        self._server: HTTPServer | None = None
        self._lock = threading.Lock()
        self._checks: dict[int, bool] = {}

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> HttpHandle:
        router = self._router_class(assert_all_called=False, assert_all_mocked=True,
                                    base_url=options["base_url"])
        router.start()
        self._checks[id(router)] = options["assert_all_called"]
        return HttpHandle(self, router)

    def verify(self, handle: HttpHandle) -> None:
        uncalled = [route for route in handle.mock.routes if not route.called]
        if self._checks.get(id(handle.mock)) and uncalled:
            pytest.fail(f"depfakes http: {len(uncalled)} route(s) of deps.http.mock never called "
                        "(assert_all_called=True):\n" + "\n".join(f"  {r!r}" for r in uncalled),
                        pytrace=False)
        if handle.server_used and self._server is not None:
            problems = _server_problems(self._server)
            if problems:
                pytest.fail("depfakes http: deps.http.server:\n" + "\n".join(problems),
                            pytrace=False)

    def release(self, handle: HttpHandle) -> None:
        self._checks.pop(id(handle.mock), None)
        handle.mock.stop(quiet=True)
        if handle.server_used and self._server is not None:
            self._server.clear()

    def server(self) -> HTTPServer:
        with self._lock:
            if self._server is None:
                from pytest_httpserver import HTTPServer

                server = HTTPServer(host="127.0.0.1", port=0)
                server.start()
                self._server = server
        return self._server

    def stop(self) -> None:
        if self._server is not None:
            self._server.clear()
            if self._server.is_running():
                self._server.stop()
            self._server = None


def _server_problems(server: HTTPServer) -> list[str]:
    problems = [f"  {assertion}" for assertion in server.assertions]
    problems += [f"  a handler raised {error!r}" for error in server.handler_errors]
    if server.ordered_handlers:
        problems.append(f"  {len(server.ordered_handlers)} ordered expectation(s) never "
                        "requested:")
        problems += [f"    {handler.matcher!r}" for handler in server.ordered_handlers]
    if server.oneshot_handlers:
        problems.append(f"  {len(server.oneshot_handlers)} oneshot expectation(s) never "
                        "requested:")
        problems += [f"    {handler.matcher!r}" for handler in server.oneshot_handlers]
    return problems
