"""The ``url`` backend: a server that already exists, named by a URL.

depfakes only creates things there under a unique prefix and drops only what it created.
"""

from __future__ import annotations

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
