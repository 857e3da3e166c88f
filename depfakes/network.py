"""One network policy for every client: checked where all of them end up, the socket.

While a policy is active, connections go only to loopback addresses, Unix sockets and
allowed hosts; DNS lookups for other hosts are refused too. httpx, requests, urllib3,
aiohttp and raw sockets all pass through ``socket.getaddrinfo`` and
``socket.socket.connect``, which is why the check lives there and not in each client.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable, Iterator
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

    def allows_name(self, host: str) -> bool:
        return self.allow_all or is_loopback(host) or host.lower() in self.allow_hosts

    def allows_ip(self, host: str) -> bool:
        return self.allows_name(host) or host in self.allowed_ips

    def refusal(self, host: str, port: Any) -> str:
        where = f"{host}:{port}" if port not in (None, "", 0) else host
        return (f"depfakes: network access to {where} is refused ({self.why}). Stub it with "
                "deps.http.mock, record it into the test's cassette with --record-mode=once, "
                f"or allow the host: depfakes_allow_hosts = {host}")


_active: list[Policy] = []
_lock = threading.Lock()
_original: dict[str, Any] = {}


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
def restricted(why: str, allow_hosts: Iterable[str] = (), allow_all: bool = False
               ) -> Iterator[Policy]:
    """Apply a policy for the duration of the block (policies nest; the innermost rules)."""
    _install()
    policy = Policy(why, frozenset(h.lower() for h in allow_hosts), allow_all)
    with _lock:
        _active.append(policy)
    try:
        yield policy
    finally:
        with _lock:
            _active.remove(policy)


def _current() -> Policy | None:
    return _active[-1] if _active else None


def _install() -> None:
    with _lock:
        if _original:
            return
        _original["getaddrinfo"] = socket.getaddrinfo
        _original["connect"] = socket.socket.connect
        _original["connect_ex"] = socket.socket.connect_ex
        socket.getaddrinfo = _guarded_getaddrinfo
        socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]


def _guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    policy = _current()
    result = _original["getaddrinfo"](host, port, *args, **kwargs) if (
        policy is None or host is None or policy.allows_name(_text(host))) else None
    if result is None:
        assert policy is not None
        raise LookupRefused(socket.EAI_NONAME, policy.refusal(_text(host), port))
    if policy is not None and not policy.allow_all and _text(host).lower() in policy.allow_hosts:
        policy.allowed_ips.update(str(info[4][0]) for info in result)
    return result


def _check(sock: socket.socket, address: Any) -> None:
    policy = _current()
    if policy is None or sock.family == getattr(socket, "AF_UNIX", None):
        return
    if isinstance(address, tuple) and address and not policy.allows_ip(_text(address[0])):
        raise NetworkRefused(policy.refusal(_text(address[0]), address[1]))


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _original["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    result: int = _original["connect_ex"](self, address)
    return result


def _text(host: Any) -> str:
    return host.decode() if isinstance(host, bytes) else str(host)
