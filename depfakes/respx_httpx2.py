"""respx routes that answer httpx2 (the httpx fork openai >= 3 and anthropic >= 2 use), built
on respx's own extension points until respx ships its own support (lundberg/respx#317):

- a respx ``Mocker`` for httpcore2's pools (httpx2's transport layer, a renamed copy of
  httpcore), to which a test's router is attached beside respx's httpcore mocker, so one
  router answers httpx and httpx2 alike;
- a ``Route`` that takes httpx2 responses and exception classes where respx expects
  httpx's (``return_value``, ``side_effect`` functions and lists, ``%``).

A Mocker named "httpcore2" that another plugin registered (pytest-httpx2, a conftest) is
used instead of depfakes' own: two mockers patching the same methods cannot both answer.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import httpx
import respx
from respx.mocks import HTTPCoreMocker, Mocker
from respx.models import Route

_CORE2_TARGETS = [target.replace("httpcore.", "httpcore2.", 1)
                  for target in HTTPCoreMocker.targets]


def installed() -> bool:
    return importlib.util.find_spec("httpcore2") is not None


class Core2Mocker(HTTPCoreMocker):
    """respx's httpcore mocker, aimed at httpcore2's classes.

    Requests are read as respx reads httpcore's (the two are the same shape), and respx's
    responses are handed back as they are (httpx2's transport reads them the same way).
    Transport errors a route raises become httpcore2's, which httpx2 turns into its own
    (an SDK tells a timeout from a refused connection by them)."""

    # Not in respx's registry (no name): nothing looks it up by name, and a module imported
    # again (pytester's in-process runs) would be refused as a second mocker of that name.
    name = ""
    routers: ClassVar[list[Any]] = []
    _patches: ClassVar[list[Any]] = []
    # Mocker.start() skips missing attributes but not missing modules.
    targets = _CORE2_TARGETS if installed() else []

    # (class, method, original, replacement, defined on the class itself): built once.
    _swaps: ClassVar[list[tuple[type, str, Any, Any, bool]]] = []
    _on: ClassVar[bool] = False

    @classmethod
    def start(cls) -> None:
        """Patch httpcore2's pools, as respx's start() does, but without resolving every
        target and introspecting every method again for each test (about 1 ms a test)."""
        if cls._on:
            return
        if not cls._swaps or any(vars(klass).get(name, getattr(klass, name)) is not original
                                 for klass, name, original, _, _ in cls._swaps):
            cls._swaps = list(cls._replacements())  # first start, or someone re-patched
        for klass, name, _, replacement, _ in cls._swaps:
            setattr(klass, name, replacement)
        cls._on = True

    @classmethod
    def stop(cls, force: bool = False) -> None:
        if (cls.routers and not force) or not cls._on:
            return
        for klass, name, original, _, own in reversed(cls._swaps):
            if own:
                setattr(klass, name, original)
            else:
                delattr(klass, name)
        cls._on = False

    @classmethod
    def _replacements(cls) -> Iterator[tuple[type, str, Any, Any, bool]]:
        for target in cls.targets:
            module, _, name = target.rpartition(".")
            klass = getattr(importlib.import_module(module), name)
            for method in cls.target_methods:
                original = getattr(klass, method, None)
                if original is not None:
                    yield (klass, method, original, cls.mock(original),  # type: ignore[no-untyped-call]
                           method in vars(klass))

    @classmethod
    def to_httpx_request(cls, **kwargs: Any) -> Any:
        request = super().to_httpx_request(**kwargs)  # type: ignore[no-untyped-call]
        request.depfakes_httpx2 = True  # recorded in route.calls as an httpx2.Request
        return request

    @classmethod
    def _send_sync_request(cls, httpx_request: Any, **kwargs: Any) -> Any:
        with _as_httpcore2_errors():
            return super()._send_sync_request(  # type: ignore[no-untyped-call]
                httpx_request, **kwargs)

    @classmethod
    async def _send_async_request(cls, httpx_request: Any, **kwargs: Any) -> Any:
        with _as_httpcore2_errors():
            return await super()._send_async_request(  # type: ignore[no-untyped-call]
                httpx_request, **kwargs)


@contextmanager
def _as_httpcore2_errors() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        import httpcore2

        native = getattr(httpcore2, type(exc).__name__, None)
        if isinstance(native, type) and issubclass(native, Exception):
            raise native(str(exc)) from exc
        raise


def httpx2_mocker() -> type[Mocker] | None:
    """The mocker of httpx2's transports (None: httpx2 is not installed)."""
    mocker = Mocker.registry.get("httpcore2", Core2Mocker)  # looked up late: plugins first
    return mocker if installed() and mocker.targets else None


@contextmanager
def attached(router: respx.Router) -> Iterator[None]:
    """While inside, ``router`` (started on its own mocker) answers httpx2 requests too."""
    mocker = httpx2_mocker()
    if mocker is None:
        yield
        return
    mocker.register(router)
    mocker.start()
    try:
        yield
    finally:
        mocker.unregister(router)
        mocker.stop()


class _Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An httpx2 response's stream, read as an httpx one: streamed responses stay lazy."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    def close(self) -> None:
        getattr(self._stream, "close", lambda: None)()

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


def as_httpx(value: Any) -> Any:
    """An httpx2.Response as the httpx.Response respx works with; anything else as it is."""
    httpx2 = _httpx2()
    if httpx2 is None or not isinstance(value, httpx2.Response):
        return value
    if isinstance(value.stream, httpx2.ByteStream):  # content=, json=, text=
        stream: Any = httpx.ByteStream(value.read())
    else:  # a stream or an iterator: left streaming
        stream = _Stream(value.stream)
    return httpx.Response(value.status_code, headers=value.headers.raw, stream=stream,
                          extensions=dict(value.extensions))


def _httpx2() -> Any:
    try:
        import httpx2
    except ImportError:
        return None
    return httpx2


class Httpx2Route(Route):
    """A respx route that also takes httpx2 responses and exception classes."""

    @Route.return_value.setter  # type: ignore[attr-defined, untyped-decorator]
    def return_value(self, value: Any) -> None:
        Route.return_value.fset(self, as_httpx(value))  # type: ignore[attr-defined]

    def __mod__(self, response: Any) -> Route:
        return super().__mod__(as_httpx(response))

    def _call_side_effect(self, effect: Any, request: Any, **kwargs: Any) -> Any:
        # respx passes the route only to functions that name a "route" parameter.
        if "route" in inspect.getfullargspec(effect).args:
            def converted(request: Any, route: Any, **more: Any) -> Any:
                return _converted_result(effect(request, route=route, **more))
        else:
            def converted(request: Any, **more: Any) -> Any:  # type: ignore[misc]
                return _converted_result(effect(request, **more))
        return super()._call_side_effect(converted, request, **kwargs)

    def _next_side_effect(self) -> Any:
        effect = super()._next_side_effect()
        httpx2 = _httpx2()
        # respx instantiates httpx's error classes itself; httpx2's need their message.
        if httpx2 is not None and isinstance(effect, type) and \
                issubclass(effect, httpx2.RequestError):
            return effect("Mock Error")
        return as_httpx(effect)  # an httpx2.Response in a side_effect list


def _as_httpx2_request(request: Any) -> Any:
    """The httpx2.Request an httpx2 client sent (respx routed its httpx copy)."""
    httpx2 = _httpx2()
    if httpx2 is None or not getattr(request, "depfakes_httpx2", False):
        return request
    try:
        content = request.content
    except httpx.RequestNotRead:  # a streamed body respx did not read: keep respx's
        return request
    return httpx2.Request(request.method, str(request.url), headers=request.headers.raw,
                          content=content, extensions=dict(request.extensions))


def _converted_result(result: Any) -> Any:
    if inspect.isawaitable(result):
        async def awaited() -> Any:
            return as_httpx(await result)
        return awaited()
    return as_httpx(result)


class Httpx2MockRouter(respx.MockRouter):
    """respx's MockRouter, whose routes also take httpx2 responses (when httpx2 is there),
    and whose calls hold httpx2 requests for httpx2's (``calls[0].request.url ==
    httpx2.URL(...)``; side effects still get respx's httpx request)."""

    def record(self, request: Any, *, response: Any = None, route: Any = None) -> None:
        super().record(_as_httpx2_request(request), response=response, route=route)

    def route(self, *patterns: Any, name: str | None = None, **lookups: Any) -> Route:
        make: Callable[..., Route] = Httpx2Route if installed() else Route
        return self.add(make(*patterns, **lookups), name=name)
