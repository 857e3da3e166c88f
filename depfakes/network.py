"""One network policy for every client: checked where all of them end up, the socket.

While a policy is active, connections go only to loopback addresses, Unix sockets, the
servers depfakes itself provides, and allowed hosts; DNS lookups for other hosts are
refused too (``*.localhost`` names resolve to loopback without asking DNS). httpx,
requests, urllib3, aiohttp and raw sockets all pass through the guarded calls:
``getaddrinfo``, ``gethostbyname(_ex)``, ``connect``/``connect_ex`` and addressed
``sendto``/``sendmsg`` (UDP, TCP Fast Open) of ``socket.socket`` and of ``_socket.socket``
itself; psycopg and psycopg2 connections (libpq connects in C) are checked by host before
they connect.

What Python cannot see is not covered: C extensions that open their own sockets (uvloop,
ctypes), subprocesses and multiprocessing children. ``depfakes offline -- CMD`` runs a
command in a network namespace of its own, where only loopback exists, for all of them.
"""

from __future__ import annotations

import _socket
import ipaddress
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from depfakes.errors import DepfakesError


class NetworkRefused(DepfakesError, ConnectionRefusedError):
    """A connection the active network policy does not allow."""


class LookupRefused(DepfakesError, socket.gaierror):
    """A DNS lookup the active network policy does not allow."""


@dataclass
class Policy:
    why: str  # e.g. "this test declares 'http'"
    allow_hosts: frozenset[str] = frozenset()
    allow_all: bool = False  # recording: requests may go out to be recorded
    allowed_ips: set[str] = field(default_factory=set)
    # What to do about a refused host, when the one who set the policy knows better than
    # the general advice (say, a route for it exists): host -> advice, or None.
    advice: Callable[[str], str | None] | None = None

    def allows_name(self, host: str) -> bool:
        return (self.allow_all or is_loopback(host) or host.lower() in self.allow_hosts
                or host.lower() in _SERVER_HOSTS)

    def allows_ip(self, host: str) -> bool:
        return self.allows_name(host) or host in self.allowed_ips

    def refusal(self, host: str, port: Any) -> str:
        where = f"{host}:{port}" if port not in (None, "", 0) else host
        advice = self.advice(host) if self.advice is not None else None
        return (f"depfakes: network access to {where} is refused ({self.why}). " + (
            advice or "Stub it with deps.http.mock, record it into the test's cassette with "
            f"--record-mode=once, or allow the host: depfakes_allow_hosts = {host}"))


_active: list[Policy] = []
_lock = threading.Lock()
_original: dict[str, Any] = {}
# Hosts of servers depfakes provides (a remote Docker engine, a shared database server):
# the dependencies a test declared must keep working under the policy.
_SERVER_HOSTS: set[str] = set()


def allow_server_host(host: str) -> None:
    """Let every policy reach ``host``: depfakes serves a dependency from there."""
    if host and not is_loopback(host):
        _SERVER_HOSTS.add(host.lower())


def is_loopback(host: str) -> bool:
    """Whether ``host`` is *written* as a loopback address (not: resolves to one)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@contextmanager
def restricted(why: str, allow_hosts: Iterable[str] = (), allow_all: bool = False,
               advice: Callable[[str], str | None] | None = None) -> Iterator[Policy]:
    """Apply a policy for the duration of the block (policies nest; the innermost rules)."""
    _install()
    policy = Policy(why, frozenset(h.lower() for h in allow_hosts), allow_all, advice=advice)
    with _lock:
        _active.append(policy)
    try:
        yield policy
    finally:
        with _lock:
            _active.remove(policy)


def _current() -> Policy | None:
    try:  # read without the lock: another thread may pop the last policy meanwhile
        return _active[-1]
    except IndexError:
        return None


def _install() -> None:
    with _lock:
        _guard_postgres_drivers()  # imported since the last policy, perhaps
        if "getaddrinfo" in _original:
            return
        _original["getaddrinfo"] = socket.getaddrinfo
        _original["gethostbyname"] = socket.gethostbyname
        _original["gethostbyname_ex"] = socket.gethostbyname_ex
        # socket.socket's own (another library, gevent say, may have replaced the class).
        for name in ("connect", "connect_ex", "sendto", "sendmsg"):
            _original[name] = getattr(socket.socket, name)
        socket.getaddrinfo = _guarded_getaddrinfo
        socket.gethostbyname = _guarded_gethostbyname
        socket.gethostbyname_ex = _guarded_gethostbyname_ex
        # socket.socket inherits these from _socket.socket; code that makes a
        # _socket.socket itself gets the guarded subclass.
        socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]
        socket.socket.sendmsg = _guarded_sendmsg  # type: ignore[method-assign]
        if issubclass(socket.socket, _socket.socket):  # the C class is what it builds on
            _socket.socket = _socket.SocketType = _GuardedCSocket  # type: ignore[misc]


def _lookup(host: Any, port: Any, resolve: Any) -> Any:
    """``resolve()`` if the policy allows the name; ``*.localhost`` never reaches DNS."""
    policy = _current()
    if policy is None or host is None:
        return resolve(host)
    name = _text(host)
    if not policy.allows_name(name):
        raise LookupRefused(socket.EAI_NONAME, policy.refusal(name, port))
    if name.lower().endswith(".localhost"):  # RFC 6761: loopback, whatever DNS says
        return resolve("localhost")
    result = resolve(host)
    if not policy.allow_all and name.lower() in policy.allow_hosts | _SERVER_HOSTS:
        addresses = result if isinstance(result, list) else [result]
        policy.allowed_ips.update(_addresses(addresses))
    return result


def _addresses(result: list[Any]) -> list[str]:
    found = []
    for item in result:
        if isinstance(item, tuple) and len(item) == 5:  # getaddrinfo
            found.append(str(item[4][0]))
        elif isinstance(item, str):  # gethostbyname
            found.append(item)
    return found


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    return _lookup(host, port,
                   lambda name: _original["getaddrinfo"](name, port, *args, **kwargs))


def _guarded_gethostbyname(host: Any) -> str:
    return str(_lookup(host, None, _original["gethostbyname"]))


def _guarded_gethostbyname_ex(host: Any) -> Any:
    result = _lookup(host, None, _original["gethostbyname_ex"])
    policy = _current()
    if policy is not None and _text(host).lower() in policy.allow_hosts | _SERVER_HOSTS:
        policy.allowed_ips.update(result[2])
    return result


def _check(sock: Any, address: Any) -> None:
    policy = _current()
    if policy is None or sock.family == getattr(socket, "AF_UNIX", None):
        return
    if isinstance(address, tuple) and address and not policy.allows_ip(_text(address[0])):
        raise NetworkRefused(policy.refusal(_text(address[0]), address[1]))


def _guarded_connect(self: Any, address: Any) -> None:
    _check(self, address)
    _original["connect"](self, address)


def _guarded_connect_ex(self: Any, address: Any) -> int:
    _check(self, address)
    result: int = _original["connect_ex"](self, address)
    return result


def _guarded_sendto(self: Any, data: Any, *args: Any) -> int:
    # sendto(data, address) or sendto(data, flags, address): UDP, TCP Fast Open.
    _check(self, args[-1] if args else None)
    result: int = _original["sendto"](self, data, *args)
    return result


def _guarded_sendmsg(self: Any, buffers: Any, *args: Any) -> int:
    # sendmsg(buffers[, ancdata[, flags[, address]]]): the fourth names a destination.
    _check(self, args[2] if len(args) >= 3 else None)
    result: int = _original["sendmsg"](self, buffers, *args)
    return result


class _GuardedCSocket(_socket.socket):
    """What ``_socket.socket(...)`` makes while depfakes is installed: the C socket with
    the same checks as ``socket.socket``."""

    connect = _guarded_connect
    connect_ex = _guarded_connect_ex
    sendto = _guarded_sendto
    sendmsg = _guarded_sendmsg


def _imported(name: str) -> Any:
    """The module if it is imported completely (not still importing in another thread)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return None if module is None or getattr(spec, "_initializing", False) else module


def _guard_postgres_drivers() -> None:
    """libpq connects in C, past every Python socket: check the host first. Drivers still
    being imported are guarded by the next policy."""
    psycopg: Any = _imported("psycopg")
    if psycopg is not None and "psycopg" not in _original:
        from psycopg.conninfo import conninfo_to_dict

        def hosts(conninfo: str = "", **kwargs: Any) -> list[str]:
            # Only the conninfo and host keywords: connect() takes others (autocommit...).
            params = {**conninfo_to_dict(conninfo),
                      **{k: v for k, v in kwargs.items() if k in ("host", "hostaddr")}}
            return [h for key in ("host", "hostaddr")
                    for h in str(params.get(key) or "").split(",") if h]

        for cls in (psycopg.Connection, psycopg.AsyncConnection):
            _original[f"psycopg.{cls.__name__}"] = cls.__dict__["connect"]
            cls.connect = _checked_connect(cls.__dict__["connect"], hosts)
        psycopg.connect = psycopg.Connection.connect  # the module's alias of the original
        _original["psycopg"] = True
    psycopg2: Any = _imported("psycopg2")
    if psycopg2 is not None and "psycopg2" not in _original:
        from psycopg2.extensions import parse_dsn  # type: ignore[import-untyped]

        def hosts2(dsn: str = "", **kwargs: Any) -> list[str]:
            params = {**(parse_dsn(dsn) if dsn else {}),
                      **{k: v for k, v in kwargs.items() if k in ("host", "hostaddr")}}
            return [h for key in ("host", "hostaddr")
                    for h in str(params.get(key) or "").split(",") if h]

        _original["psycopg2"] = psycopg2.connect
        psycopg2.connect = _checked_function(psycopg2.connect, hosts2)


def _check_hosts(hosts: list[str], port: Any) -> None:
    policy = _current()
    for host in hosts if policy is not None else ():
        if not host.startswith("/") and not policy.allows_ip(host):  # type: ignore[union-attr]
            raise NetworkRefused(policy.refusal(host, port))  # type: ignore[union-attr]


def _checked_connect(original: Any, hosts: Any) -> Any:
    function = original.__func__

    def connect(cls: Any, /, conninfo: str = "", **kwargs: Any) -> Any:
        _check_hosts(hosts(conninfo, **kwargs), kwargs.get("port"))
        return function(cls, conninfo, **kwargs)

    return classmethod(connect)


def _checked_function(original: Any, hosts: Any) -> Any:
    def connect(dsn: str | None = None, *args: Any, **kwargs: Any) -> Any:
        _check_hosts(hosts(dsn or "", **kwargs), kwargs.get("port"))
        return original(dsn, *args, **kwargs)

    return connect


def offline_command(command: list[str]) -> list[str]:
    """``command`` in a network namespace of its own, where only loopback exists: nothing
    it starts (subprocesses, C extensions, other languages) reaches another host. Needs
    util-linux ``unshare``; unprivileged users get a user namespace to make it in."""
    import os
    import shutil

    if shutil.which("unshare") is None:
        raise DepfakesError("depfakes offline needs util-linux 'unshare' (apt install "
                            "util-linux); it runs the command in its own network namespace")
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    lo_up = "ip link set lo up 2>/dev/null || python3 -c '' ; exec \"$@\""
    return ["unshare", "--net", *user, "--", "sh", "-c", lo_up, "depfakes-offline", *command]


def _text(host: Any) -> str:
    return host.decode() if isinstance(host, bytes) else str(host)
