"""The ``http`` dependency: a respx router active for the test, a local
pytest-httpserver started once per session on first use, the test's vcrpy cassette, and
the network policy.

Layers, first to answer first: respx routes (never recorded); loopback traffic (the local
server, containers: never recorded); the cassette (replayed, or recorded when the record
mode allows); everything else is refused at the socket.

Unlike plain pytest-httpserver, a request the server did not expect, an error in a
handler, or an ordered/oneshot expectation left unmet fails the test.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import pytest

from depfakes import cassette_cache, cassette_use, vcr_compat
from depfakes.backends import BackendUnavailable
from depfakes.cassette_cache import ParseCache
from depfakes.cassettes import (
    CHOICE_KEY,
    RECORD_MODES,
    Scrubber,
    StaleCassetteWarning,
    build_vcr,
    cassette_options,
    cassette_path,
    clearer_missing_message,
)
from depfakes.config import Setting, Settings
from depfakes.marker import EMPTY_SPEC
from depfakes.network import is_loopback, restricted
from depfakes.providers.base import Option, Provider, StartContext
from depfakes.state import NEXT_ITEM_KEY, SPEC_KEY

if TYPE_CHECKING:
    import httpx
    import respx
    from pytest_httpserver import HTTPServer


class HttpHandle:
    """What a test gets as ``deps.http``."""

    mock: respx.MockRouter
    # The vcrpy Cassette in use (play_count, len(), ...), or None when none applies.
    cassette: Any
    record_mode: str

    def __init__(self, provider: HttpProvider, router: respx.MockRouter, record_mode: str
                 ) -> None:
        self._provider = provider
        self.mock = router
        self.record_mode = record_mode
        self.cassette = None
        self.server_used = False
        self._assert_all_called = False
        self._exits = ExitStack()

    @property
    def recorder(self) -> Any:
        """The vcrpy ``VCR`` depfakes records and replays with (its matchers, persister)."""
        return self._provider._vcr

    @property
    def server(self) -> HTTPServer:
        """A pytest-httpserver ``HTTPServer`` on 127.0.0.1 (one per session, cleared per test)."""
        self.server_used = True
        return self._provider.server()

    def __repr__(self) -> str:
        return f"<HttpHandle routes={len(self.mock.routes)} record_mode={self.record_mode}>"


def _router_class() -> type[respx.MockRouter]:
    import respx
    from respx.models import AllMockedAssertionError

    class UnmatchedRequest(AllMockedAssertionError):
        """A request no route matched; subclassing keeps respx's multi-router fallback."""

    UnmatchedRequest.__qualname__ = UnmatchedRequest.__name__
    UnmatchedRequest.__module__ = __name__

    from respx.mocks import Mocker

    from depfakes.respx_httpx2 import Httpx2MockRouter

    class Router(Httpx2MockRouter):
        loopback = respx.Route().pass_through()
        # While recording, unmatched requests go out so the cassette can record them.
        recording = False
        # respx snapshots a router when it is made and when it starts, to roll back to
        # at its stop. A test's router is made for that test and dropped after it, so
        # those two have nothing to restore, and each costs ~0.2 ms (a CallList, that is
        # a mock, per snapshot and per route). Snapshots the test takes itself are kept.
        _running = False

        def snapshot(self) -> None:
            if self._running:
                super().snapshot()

        def start(self) -> None:
            super().start()
            self._running = True

        def alone(self) -> bool:
            """Whether no other router (a respx_mock fixture's) is active: with one, an
            unmatched loopback request is the other's to answer or refuse, as with respx
            alone (routers answer in turn; letting it through would skip the other)."""
            return all(router is self for mocker in Mocker.registry.values()
                       for router in mocker.routers)

        @contextmanager
        def resolver(self, request: httpx.Request) -> Iterator[Any]:
            try:
                with super().resolver(request) as resolved:
                    yield resolved
                    # Unstubbed loopback traffic (deps.http.server, containers) goes through.
                    if resolved.route is None and (self.recording or (
                            is_loopback(request.url.host) and self.alone())):
                        resolved.route, resolved.response = self.loopback, request
            except AllMockedAssertionError as exc:
                if isinstance(exc, UnmatchedRequest):
                    raise
                raise UnmatchedRequest(_unmatched_message(request)) from None

        def answers(self, request: httpx.Request) -> bool:
            """Whether one of the test's routes matches (without calling side effects)."""
            return any(route.pattern is None or route.pattern.match(request)
                       for route in self.routes)

    return Router


def _unmatched_message(request: httpx.Request) -> str:
    method = request.method
    url = str(request.url)
    return (f"depfakes http: {method} {url} matched no route of deps.http.mock. Stub it, e.g. "
            f"deps.http.mock.{method.lower()}(\"{url}\").respond(200, json={{...}}), "
            "send it to deps.http.server, or record it with --record-mode=once")


class HttpProvider(Provider):
    name = "http"
    handle_type = HttpHandle
    requires = ("respx", "httpx", "pytest_httpserver", "vcr")
    preload = ("requests", "docker", "yaml")
    extra = "http"
    settings = (
        Setting("record_mode", "Cassette record mode: none (default: replay only, nothing "
                "leaves), once, new_episodes or all, as in vcrpy, or rewrite (as in "
                "pytest-recording: the test's interactions recorded afresh, the cassette "
                "replaced only if it recorded any). A session setting: markers cannot change "
                "it.", default="none", choices=RECORD_MODES, safety=True,
                aliases=("--record-mode", "--vcr-record", "--vcr-record-mode")),
        Setting("cassettes_off", "Tests that declare http reach the network as they are: no "
                "cassette is replayed or recorded (pytest-vcr's --disable-vcr; respx routes "
                "still answer). Never in CI.", type="bool", default=False, safety=True,
                aliases=("--disable-vcr",)),
        Setting("cassette_max_age", "Age after which a cassette is stale, e.g. 90d, 12w, 36h "
                "(default: never), judged by its oldest response's Date header: a test that "
                "replays a stale cassette warns, or fails under --deps-strict (on in CI), "
                "naming the command that re-records it.", type="duration", default=None),
        Setting("cassette_dir", "Directory of cassettes, relative to the rootdir.",
                default="cassettes"),
        Setting("cassette_layout", "Where cassettes are: \"depfakes\" (<cassette_dir>/<module "
                "path>/<test>.yaml), \"pytest-recording\" (<test dir>/cassettes/<module>/"
                "<Class.test>.yaml), \"pytest-vcr\" (<test dir>/cassettes/<Class.test>.yaml), "
                "or \"auto\" (the default: pytest-recording's for tests marked "
                "@pytest.mark.vcr, depfakes' for the others).", default="auto",
                choices=("auto", "depfakes", "pytest-recording", "pytest-vcr"), cli=False),
        Setting("respx_aliases", "Other names of respx's respx_mock fixture and respx "
                "marker, FIXTURE:MARKER per line (the OpenAI SDK's respx2_mock:respx2): served "
                "as respx serves its own, with httpx2 answered too.", type="lines",
                default=list, cli=False),
        Setting("scrub", "Names of headers, parameters or JSON fields to scrub from what is "
                "recorded, one per line, besides the built-in ones; '-name' keeps a name the "
                "built-in rules would scrub (a 'token' pagination cursor), 'off' turns the "
                "built-in names off (values shaped like known tokens are still scrubbed).",
                type="lines", default=list),
    )
    options: ClassVar[Mapping[str, Option]] = {
        "assert_all_called": Option(False, "Fail the test if a respx route was never called.",
                                    type=bool),
        "base_url": Option(None, "Base URL that the test's respx routes are relative to.",
                           type=(str, type(None))),
        "cassette": Option(None, "Name of a cassette shared by every test that names it "
                           "(default: one cassette per test).", type=(str, type(None))),
        "playback_repeats": Option(False, "Let a recorded response answer the same request "
                                   "again (vcrpy's allow_playback_repeats). Off: each recorded "
                                   "response plays once, in the order recorded (page 1, then "
                                   "page 2 of the same URL).", type=bool),
    }

    def start(self, ctx: StartContext) -> None:
        _let_docker_through_vcrpy()
        self._router_class = _router_class()
        self._server: HTTPServer | None = None
        self._lock = threading.Lock()
        self._record_mode = ctx.settings.get("record_mode")
        self._allow_hosts = ctx.settings.get("allow_hosts")
        self._cassette_root = Path(ctx.config.rootpath) / ctx.settings.get("cassette_dir")
        self._current: Any = None
        self._config = ctx.config
        self._cassettes_off = ctx.settings.get("cassettes_off")
        self._max_age = ctx.settings.get("cassette_max_age")
        self._strict = ctx.settings.get("strict")
        self._record_flag = "--deps-record-mode" if vcr_compat.loaded(ctx.config.pluginmanager) \
            else "--record-mode"
        hook = ctx.config.hook
        scrubber = Scrubber.from_setting(
            ctx.settings.get("scrub"),
            more_request=lambda request: hook.pytest_depfakes_scrub_request(request=request),
            more_response=lambda response: hook.pytest_depfakes_scrub_response(
                response=response),
        )
        self._vcr = build_vcr(self._record_mode, scrubber, self._answered_by_route,
                              _parse_cache(ctx.config))
        if hasattr(hook, "pytest_recording_configure"):  # its custom matchers, serializers
            hook.pytest_recording_configure(config=ctx.config, vcr=self._vcr)

    @classmethod
    def look_ahead(cls, config: pytest.Config, settings: Settings,
                   items: Sequence[pytest.Item]) -> AbstractContextManager[None]:
        """Parse the cassettes these tests will replay in a process of its own, ahead of
        them (cassette_cache.warming), where pytest's cache keeps parsed cassettes."""
        cache = _parse_cache(config)
        if cache is None or settings.get("cassettes_off") or \
                settings.get("record_mode") in ("all", "rewrite") or \
                hasattr(config, "workerinput"):  # xdist's workers fill the cores already
            return nullcontext()
        root = Path(config.rootpath) / settings.get("cassette_dir")
        directories = [root]
        modules = {item.nodeid.partition("::")[0]: Path(item.path) for item in items}
        for nodeid, module in modules.items():
            directories += [cassette_path(root, f"{nodeid}::_", None).parent,  # depfakes'
                            module.parent / "cassettes" / module.stem,  # pytest-recording's
                            module.parent / "cassettes"]  # pytest-vcr's
        return cassette_cache.warming(cache.directory, cassette_cache.in_test_order(
            directories, (_cassette_stems(item) for item in items)))

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> HttpHandle:
        router = self._router_class(assert_all_called=False, assert_all_mocked=True,
                                    base_url=options["base_url"])
        handle = HttpHandle(self, router, self._record_mode)
        try:
            handle._exits.enter_context(_started(router, _next_declares_http(item)))
            self._current = router
            if self._cassettes_off:  # unmatched requests go out, as they are
                handle._exits.enter_context(restricted(
                    "this test declares 'http', cassettes off", self._allow_hosts,
                    allow_all=True))
                router.recording = True  # type: ignore[attr-defined]
            else:
                self._open_cassette(item, options, handle)
        except BaseException:
            handle._exits.close()
            raise
        handle._assert_all_called = options["assert_all_called"]
        return handle

    def _open_cassette(self, item: pytest.Item, options: Mapping[str, Any],
                       handle: HttpHandle) -> None:
        """The test's cassette (if it has one, or may record one) and the network policy."""
        choice = item.stash.get(CHOICE_KEY, None)  # the vcr marker, another layout
        path = (choice.path if choice is not None and choice.path is not None else
                cassette_path(self._cassette_root, item.nodeid, options["cassette"]))
        if path.exists() or self._record_mode != "none" or \
                any(p.exists() for p in (choice.extra if choice else ())):
            handle.cassette = handle._exits.enter_context(self._vcr.use_cassette(
                str(path), allow_playback_repeats=options["playback_repeats"],
                **cassette_options(self._vcr, path, choice)))
            handle.cassette.depfakes_nodeid = item.nodeid  # for the 'not in cassette' message
            handle._exits.enter_context(clearer_missing_message())
            self._check_age(path, item.nodeid)
        recording = handle.cassette is not None and not handle.cassette.write_protected
        handle.mock.recording = recording  # type: ignore[attr-defined]
        why = "this test declares 'http'" + (", recording" if recording else "")
        if handle.cassette is None:  # say where a cassette was looked for
            why += f"; no cassette at {path} (record mode '{self._record_mode}')"
        handle._exits.enter_context(restricted(why, self._allow_hosts, allow_all=recording,
                                               advice=_route_advice(handle.mock)))

    def _check_age(self, path: Path, nodeid: str) -> None:
        """Warn (fail under --deps-strict) when the cassette is older than the max age."""
        recorded = self._vcr.depfakes_files.read(str(path)) if self._max_age else None
        oldest = recorded.oldest_date() if recorded is not None else None
        if oldest is None or datetime.now(timezone.utc) - oldest <= self._max_age:
            return
        age = datetime.now(timezone.utc) - oldest
        message = (f"depfakes http: cassette {path} is {_days(age)} old (its oldest "
                   f"response is dated {oldest:%Y-%m-%d}), older than "
                   f"depfakes_cassette_max_age ({_days(self._max_age)}). Re-record it "
                   f"against the real API: pytest '{nodeid}' {self._record_flag}=rewrite")
        if self._strict:
            pytest.fail(message, pytrace=False)
        warnings.warn(StaleCassetteWarning(message), stacklevel=1)

    def verify(self, handle: HttpHandle) -> None:
        uncalled = [route for route in handle.mock.routes if not route.called]
        if handle._assert_all_called and uncalled:
            pytest.fail(f"depfakes http: {len(uncalled)} route(s) of deps.http.mock never called "
                        "(assert_all_called=True):\n" + "\n".join(f"  {r!r}" for r in uncalled),
                        pytrace=False)
        if handle.server_used and self._server is not None:
            problems = _server_problems(self._server)
            if problems:
                pytest.fail("depfakes http: deps.http.server:\n" + "\n".join(problems),
                            pytrace=False)

    def release(self, handle: HttpHandle) -> None:
        self._current = None
        if handle.cassette is not None:
            self._vcr.depfakes_files.note_played(handle.cassette)
        try:
            handle._exits.close()  # saves what was recorded, lifts the policy, stops respx
        finally:
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
        _BRIDGE.leave(stop=True)
        files = self._vcr.depfakes_files
        cassette_use.save(self._config, files.interactions, files.played)
        if files.cache is not None:
            files.cache.close()
        if self._server is not None:
            self._server.clear()
            if self._server.is_running():
                self._server.stop()
            self._server = None

    def _answered_by_route(self, request: Any) -> bool:
        """For vcrpy: a request one of the test's respx routes answers is not recorded."""
        router = self._current
        if router is None or not router.routes:
            return False
        import httpx

        try:
            candidate = httpx.Request(request.method, request.uri, headers=dict(request.headers),
                                      content=request.body or b"")
        except Exception:
            return False
        return bool(router.answers(candidate))


# Clients a refused connection may come from, the one the test called first: requests
# calls urllib3, httpx calls httpcore.
_CLIENTS = ("requests", "aiohttp", "httplib2", "urllib3", "httpx2", "httpx", "httpcore2",
            "httpcore", "http")


def _route_advice(router: respx.MockRouter) -> Callable[[str], str | None]:
    """For a refused host that one of the test's routes is for: why that route did not
    answer (the general advice, to stub the request, would be followed already)."""
    def advice(host: str) -> str | None:
        if not _routes_host(router, host):
            return None
        client = _calling_client()
        if client in ("httpx", "httpx2", "httpcore", "httpcore2"):
            return (f"A route of deps.http.mock is for {host}, but this {client} request "
                    "went past respx: its client has a transport of its own, not the "
                    "connection pools respx patches. Give the client its default "
                    "transport in tests, or record it with --record-mode=once")
        return (f"A route of deps.http.mock is for {host}, but respx routes answer httpx "
                f"and httpx2 only, and this request comes from {client or 'another client'}."
                " For it: serve the answer from deps.http.server (pytest-httpserver) and "
                "point the client there, record it into the test's cassette with "
                f"--record-mode=once, or allow the host: depfakes_allow_hosts = {host}")
    return advice


def _routes_host(router: respx.MockRouter, host: str) -> bool:
    """Whether a route of ``router`` is for ``host`` (a host or URL pattern naming it,
    or a route for any request)."""
    import httpx
    from respx import patterns

    probe = httpx.Request("GET", f"https://{host}/")
    for route in router.routes:
        if route.pattern is None:
            return True
        for leaf in route.pattern:
            if isinstance(leaf, patterns.Host) and leaf.match(probe):
                return True
            if isinstance(leaf, patterns.URL) and isinstance(leaf.value, str) and \
                    urlsplit(leaf.value).hostname == host.lower():
                return True
    return False


def _calling_client() -> str | None:
    """The HTTP client package on the stack that the test called first."""
    seen = set()
    frame = sys._getframe(1)
    while frame is not None:
        seen.add(str(frame.f_globals.get("__name__", "")).partition(".")[0])
        frame = frame.f_back  # type: ignore[assignment]
    return next((client for client in _CLIENTS if client in seen), None)


def _days(age: timedelta) -> str:
    return f"{age.days} days" if age.days else f"{age.seconds // 3600} hours"


def _cassette_stems(item: pytest.Item) -> tuple[str, ...]:
    """The names a test's cassette file may have: depfakes' and the other layouts'."""
    own = cassette_path(Path(), item.nodeid, None).stem
    cls = getattr(item, "cls", None)
    return (own, item.name) if cls is None else (own, item.name, f"{cls.__name__}.{item.name}")


def _parse_cache(config: pytest.Config) -> ParseCache | None:
    """Parsed cassettes kept in pytest's cache directory (none under -p no:cacheprovider)."""
    cache = getattr(config, "cache", None)
    return ParseCache(cache.mkdir("depfakes-cassettes") / "parsed") if cache else None


def _let_docker_through_vcrpy() -> None:
    """While a cassette is active, vcrpy swaps urllib3's connection classes and then waits
    for a pool to hand out one of its own. docker-py's Unix-socket pool never does, so
    docker calls (testcontainers, depfakes' own docker backend) would spin forever. Telling
    the pool which class it really makes lets them through, unrecorded."""
    from depfakes.backends.docker import import_docker

    try:
        unixconn = import_docker().transport.unixconn
    except BackendUnavailable:
        return  # no docker-py: nothing to let through
    unixconn.UnixHTTPConnectionPool.ConnectionCls = unixconn.UnixHTTPConnection


@contextmanager
def _started(router: respx.MockRouter, next_declares_http: bool) -> Iterator[None]:
    """The router answers httpx (respx's own mocker) and httpx2 (respx_httpx2.py). When the
    next test declares http too, the patches stay in place for it (_BRIDGE)."""
    from depfakes import respx_httpx2

    router.start()
    _BRIDGE.leave()  # the test's router stands in now
    try:
        with respx_httpx2.attached(router):
            try:
                yield
            finally:
                if next_declares_http:
                    _BRIDGE.stand_in(router)
    finally:
        router.stop(quiet=True)


class _Bridge:
    """Keeps respx's patches from one test that declares http to the next: patching and
    unpatching httpcore's and httpcore2's classes again costs about 1.5 ms a test. Registered
    on the routers' mockers between two such tests (never while a test runs: a test's
    router must be alone, see Router.alone), it lets every request through as if nothing
    were patched; a skipped next test leaves it until the next http test, or the end."""

    def __init__(self) -> None:
        self._mockers: list[Any] = []

    def stand_in(self, router: respx.MockRouter) -> None:
        from depfakes import respx_httpx2

        self._mockers = [m for m in (router.Mocker, respx_httpx2.httpx2_mocker()) if m]
        for mocker in self._mockers:
            mocker.register(self)

    def leave(self, stop: bool = False) -> None:
        for mocker in self._mockers:
            mocker.unregister(self)
            if stop:
                mocker.stop()
        self._mockers = []

    def handler(self, request: httpx.Request) -> None:
        from respx.models import AllMockedAssertionError, PassThrough

        if any(router is not self for mocker in self._mockers for router in mocker.routers):
            # Another router (respx used directly, after a skipped http test) answers:
            # respx's mockers ask the next router on this error.
            raise AllMockedAssertionError("depfakes: not a test's router")
        raise PassThrough("depfakes: between two http tests", request=request,
                          origin=None)  # type: ignore[arg-type]

    async def async_handler(self, request: httpx.Request) -> None:
        self.handler(request)


_BRIDGE = _Bridge()


def _next_declares_http(item: pytest.Item) -> bool:
    following = item.stash.get(NEXT_ITEM_KEY, None)
    return following is not None and "http" in following.stash.get(SPEC_KEY, EMPTY_SPEC).versions


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
