"""How a real server is obtained: ``docker`` (a container), ``local`` (binaries on this
machine) or ``url`` (an existing server). Providers describe *what* to run; backends know
*how*, and are shared by every provider that needs a real server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

BACKENDS = ("url", "docker", "local")


@dataclass
class Server:
    """A running server, reachable from this machine."""

    backend: str
    host: str
    port: int
    description: str
    stop: Callable[[], None] = field(default=lambda: None)
    logs: Callable[[], str] = field(default=lambda: "")


class BackendUnavailable(Exception):
    """This backend cannot serve here; the message says why and how to fix it."""


def last_lines(text: str, count: int = 15) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(f"    {line}" for line in lines[-count:])
