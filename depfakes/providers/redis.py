"""The ``redis`` dependency: fakeredis, fresh for every test.

Each test gets its own ``FakeServer`` (no 16-database limit, nothing shared). ``url``
points at one loopback TCP endpoint per session that always serves the *current* test's
server; at the end of a test its connections are closed, so pooled clients built from
the URL (even module-level ones) reconnect into the next test's state instead of
leaking the previous one. In this process, clients built from the URL do not even use
TCP: redis-py's pools make fakeredis' in-process connections for that address (see
``_InProcess``); other processes (a subprocess given the URL) connect over TCP.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from depfakes.backends import Server, ServerInfo, ServerSpec, obtain, redact
from depfakes.config import Settings
from depfakes.providers.base import Option, Provider, StartContext

if TYPE_CHECKING:
    import fakeredis
    import redis
    import redis.asyncio

DEFAULT_IMAGE = "redis:7-alpine"


class RedisHandle:
    """What a test gets as ``deps.redis``."""

    # The test's fakeredis server; None on a real Redis (--deps-backend redis=docker).
    server: fakeredis.FakeServer | None

    def __init__(self, url: Callable[[], str], server: fakeredis.FakeServer | None,
                 decode_responses: bool) -> None:
        self.server = server
        self._url = url
        self._decode_responses = decode_responses

    @cached_property
    def client(self) -> redis.Redis:
        """A redis-py client on this test's state."""
        if self.server is None:
            import redis

            return redis.Redis.from_url(self.url, decode_responses=self._decode_responses)
        import fakeredis

        return fakeredis.FakeRedis(server=self.server, decode_responses=self._decode_responses)

    @cached_property
    def async_client(self) -> redis.asyncio.Redis:
        """An asyncio client (redis.asyncio API) on this test's state."""
        if self.server is None:
            import redis.asyncio

            return redis.asyncio.Redis.from_url(self.url,
                                                decode_responses=self._decode_responses)
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=self.server,
                                        decode_responses=self._decode_responses)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` reaching this test's state, for code that builds its
        own client (``redis.Redis.from_url``). For the fake, started on first use."""
        return self._url()

    def __repr__(self) -> str:
        return f"<RedisHandle {'fakeredis' if self.server is not None else redact(self.url)}>"


class _Endpoint:
    """A loopback TCP server for the fakes, routed to the current test's FakeServer."""

    def __init__(self, version: tuple[int, ...]) -> None:
        self._version = version
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: Any = None
        self.address: tuple[str, int] | None = None

    def current_server(self) -> Any:
        """The FakeServer the endpoint serves now (the test's, or an empty one between)."""
        return self._current

    def url(self) -> str:
        with self._lock:
            if self._server is None:
                self._server = _make_tcp_server(self._version)
                if self._current is not None:
                    self._server.fake_server = self._current
                self._thread = threading.Thread(target=self._server.serve_forever,
                                                name="depfakes-redis", daemon=True)
                self._thread.start()
                self.address = self._server.server_address[:2]
                _IN_PROCESS.add(self)
            address = self.address
        assert address is not None  # set with the server
        return f"redis://{address[0]}:{address[1]}/0"

    def serves(self, connection_kwargs: Mapping[str, Any]) -> bool:
        """Whether a redis-py pool with these connection kwargs points here."""
        if self.address is None or connection_kwargs.get("path"):
            return False
        host = connection_kwargs.get("host")
        return (host == self.address[0] or host == "localhost") and \
            int(connection_kwargs.get("port") or 6379) == self.address[1]

    def route_to(self, fake_server: Any) -> None:
        self._current = fake_server
        if self._server is not None:
            self._server.fake_server = fake_server
            self._server.drop_connections()

    def route_to_idle(self, make_server: Any) -> None:
        """Between tests: close the test's connections; new ones get an empty server."""
        self._current = None
        if self._server is not None:
            self.route_to(make_server())

    def close(self) -> None:
        if self._server is not None:
            _IN_PROCESS.discard(self)
            self._server.drop_connections()
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self.address = None


class _InProcess:
    """Clients that code under test builds from the URL, served without TCP: redis-py's
    pools (sync and asyncio) make fakeredis' in-process connections for an endpoint's
    address, bound to its current server, instead of sockets; a request then costs what
    it costs on ``FakeRedis``, not a socket round trip to the endpoint's thread. A
    connection made in an earlier test rebinds when its pool hands it out again, as a
    socket the endpoint closed would reconnect. Installed while an endpoint exists; if
    fakeredis moves its connection classes, clients simply use TCP."""

    def __init__(self) -> None:
        self._endpoints: list[_Endpoint] = []
        self._originals: list[tuple[Any, Any]] = []
        self._classes: dict[tuple[_Endpoint, type], type] = {}  # a class per endpoint

    def add(self, endpoint: _Endpoint) -> None:
        self._endpoints.append(endpoint)
        if len(self._endpoints) == 1:
            self._install()

    def discard(self, endpoint: _Endpoint) -> None:
        if endpoint in self._endpoints:
            self._endpoints.remove(endpoint)
        self._classes = {key: c for key, c in self._classes.items() if key[0] is not endpoint}
        if not self._endpoints:
            for pool, original in self._originals:
                pool.make_connection = original
            self._originals.clear()

    def _install(self) -> None:
        import redis.asyncio.connection as async_connection
        import redis.connection as sync_connection

        try:
            routed = _routed_connection_classes()
        except ImportError:
            return
        modules = (sync_connection, async_connection)
        for module, connection_class in zip(modules, routed, strict=True):
            pool = module.ConnectionPool
            self._originals.append((pool, pool.make_connection))
            pool.make_connection = self._make_connection(pool.make_connection, module.Connection,
                                                         connection_class)

    def _make_connection(self, original: Any, tcp: type, routed: type) -> Any:
        def make_connection(pool: Any) -> Any:
            if pool.connection_class is tcp:
                endpoint = next((e for e in self._endpoints
                                 if e.serves(pool.connection_kwargs)), None)
                if endpoint is not None:  # this pool points at an endpoint: route it
                    key = (endpoint, routed)
                    if key not in self._classes:
                        self._classes[key] = type(routed.__name__, (routed,),
                                                  {"endpoint": endpoint})
                    pool.connection_class = self._classes[key]
            return original(pool)

        return make_connection


_IN_PROCESS = _InProcess()


def _routed_connection_classes() -> tuple[type, type]:
    from fakeredis._clients._sync import FakeRedisConnection
    from fakeredis.aioredis import FakeAsyncRedisConnection

    class RoutedConnection(FakeRedisConnection):
        endpoint: _Endpoint  # set on the subclass made for each endpoint

        def __init__(self, **kwargs: Any) -> None:
            self._route = self.endpoint.current_server()
            super().__init__(server=self._route, **kwargs)

        def connect(self) -> None:
            if self._sock is not None and self._route is not self.endpoint.current_server():
                self.disconnect()  # made in an earlier test
            if self._sock is None:
                self._server = self._route = self.endpoint.current_server()
            super().connect()

    class RoutedAsyncConnection(FakeAsyncRedisConnection):
        endpoint: _Endpoint

        def __init__(self, **kwargs: Any) -> None:
            self._route = self.endpoint.current_server()
            super().__init__(server=self._route, **kwargs)

        async def connect(self) -> None:
            if self._sock is not None and self._route is not self.endpoint.current_server():
                await self.disconnect()
            if self._sock is None:
                self._server = self._route = self.endpoint.current_server()
            await super().connect()  # type: ignore[no-untyped-call]

    return RoutedConnection, RoutedAsyncConnection


def _make_tcp_server(version: tuple[int, ...]) -> Any:
    from fakeredis import TcpFakeServer

    class RoutedTcpServer(TcpFakeServer):
        """fakeredis' TCP server that can close its client connections between tests."""

        daemon_threads = True
        block_on_close = False

        def __init__(self) -> None:
            self.open_sockets: set[socket.socket] = set()
            self.sockets_lock = threading.Lock()
            super().__init__(("127.0.0.1", 0), server_version=version)

        def process_request(self, request: Any, client_address: Any) -> None:
            with self.sockets_lock:
                self.open_sockets.add(request)
            super().process_request(request, client_address)

        def shutdown_request(self, request: Any) -> None:
            with self.sockets_lock:
                self.open_sockets.discard(request)
            super().shutdown_request(request)

        def drop_connections(self) -> None:
            with self.sockets_lock:
                sockets = list(self.open_sockets)
            for sock in sockets:
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)

    return RoutedTcpServer()


def _parse_version(version: str | None) -> tuple[int, ...]:
    if version is None:
        return (7, 4)
    return tuple(int(part) for part in version.split("."))


def _redis_ready(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


class RedisProvider(Provider):
    name = "redis"
    handle_type = RedisHandle
    requires = ("fakeredis", "redis")
    extra = "redis"
    accepts_version = True
    # A real Redis only for fidelity runs (--deps-backend redis=docker); "fake" by default.
    server_info = ServerInfo(image=DEFAULT_IMAGE, port=6379, pin_suffix="-alpine",
                        own_backends=("fake",))
    options: ClassVar[Mapping[str, Option]] = {
        "decode_responses": Option(False, "Return str instead of bytes from the handle's "
                                          "clients.", type=bool),
    }

    @classmethod
    def check_version(cls, version: str) -> None:
        try:
            parsed = _parse_version(version)
        except ValueError:
            raise ValueError(
                f"'redis:{version}': a Redis version is numbers like 7 or 7.2") from None
        if not 6 <= parsed[0] <= 8:
            raise ValueError(f"'redis:{version}': fakeredis emulates Redis 6 to 8")

    @classmethod
    def diagnose(cls, settings: Settings) -> dict[str, tuple[bool, str]]:
        fake = Provider.diagnose.__func__(cls, settings)  # type: ignore[attr-defined]
        found = {"fake": fake.get("in-process", (True, "fakeredis installed"))}
        if settings.get("backend").get("redis") == "docker":
            found.update(super().diagnose(settings))
        return found

    def start(self, ctx: StartContext) -> None:
        import fakeredis

        self._fakeredis = fakeredis
        self._version = _parse_version(ctx.version)
        self._endpoint = _Endpoint(self._version)
        self._real: Server | None = None
        if ctx.settings.get("backend").get("redis", "fake") not in ("fake", "auto"):
            self._real = obtain(self._spec(ctx), ctx)
            self.description = self._real.description

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> RedisHandle:
        if self._real is not None:
            url = self._real.url
            handle = RedisHandle(lambda: url, None, options["decode_responses"])
            # The same guarantee as the fake: the test starts from an empty server.
            handle.client.flushall()
            return handle
        server = self._fakeredis.FakeServer(version=self._version)
        self._endpoint.route_to(server)
        return RedisHandle(self._endpoint.url, server, options["decode_responses"])

    def release(self, handle: RedisHandle) -> None:
        handle.__dict__.pop("async_client", None)  # must be closed on the test's own loop
        client = handle.__dict__.pop("client", None)
        if client is not None:
            client.close()
        if self._real is None:
            self._endpoint.route_to_idle(
                lambda: self._fakeredis.FakeServer(version=self._version))

    def stop(self) -> None:
        self._endpoint.close()
        if self._real is not None:
            self._real.stop()

    def _spec(self, ctx: StartContext) -> ServerSpec:
        assert self.server_info is not None
        return ServerSpec(
            dependency="redis", version=ctx.version, info=self.server_info,
            url=lambda host, port, secret: f"redis://:{secret}@{host}:{port}/0",
            ready=_redis_ready,
            command=lambda secret: ["redis-server", "--requirepass", str(secret)],
            definition=("redis",),
            # Isolation is FLUSHALL: one server per xdist worker, never shared.
            shared_by_workers=False,
        )
