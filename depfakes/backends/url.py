"""The ``url`` backend: a server that already exists, named by a URL.

depfakes only creates things there under a unique prefix and drops only what it created.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from depfakes.backends import BackendUnavailable, Server


def server_from_url(url: str, default_port: int) -> Server:
    parts = urlsplit(url)
    if not parts.hostname:
        raise BackendUnavailable(f"{url!r} is not a server URL (expected scheme://host:port/...)")
    try:
        port = parts.port or default_port
    except ValueError:
        raise BackendUnavailable(f"{url!r} has an invalid port") from None
    safe = url.replace(f":{parts.password}@", ":***@") if parts.password else url
    return Server("url", parts.hostname, port, f"url {safe}")


def require_url(url: str | None, variable: str) -> str:
    """The configured URL, or BackendUnavailable saying which variable selects one."""
    if not url:
        raise BackendUnavailable(f"set {variable} to use an existing server")
    return url


def diagnose_url(url: str | None, variable: str, default_port: int,
                 probe: Callable[[str], object]) -> tuple[bool, str]:
    """For ``depfakes doctor``: is a URL configured, and does ``probe(url)`` get an answer?"""
    try:
        server = server_from_url(require_url(url, variable), default_port)
    except BackendUnavailable as exc:
        return False, str(exc)
    try:
        probe(str(url))
    except Exception as exc:
        return False, f"{server.description} does not answer: {str(exc).splitlines()[0]}"
    return True, f"{server.description} answers"
