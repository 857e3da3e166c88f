"""How a real server is obtained: ``docker`` (a container), ``local`` (binaries on this
machine) or ``url`` (an existing server). Providers describe *what* to run; backends know
*how*, and are shared by every provider that needs a real server.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

BACKENDS = ("url", "docker", "local")
T = TypeVar("T")

# This process's session: names its own databases (clones) and, unless it is a
# pytest-xdist worker, labels the servers it starts.
SESSION_ID = uuid.uuid4().hex[:12]


@dataclass
class Owner:
    """Whose servers these are: the session and process their labels name. A later
    session removes them once that process is gone. An xdist worker's servers belong to
    its controller, which outlives every worker (see backends.shared)."""

    session: str
    pid: int


OWNER = Owner(SESSION_ID, os.getpid())


@dataclass
class Server:
    """A running server, reachable from this machine."""

    backend: str
    host: str
    port: int
    description: str
    stop: Callable[[], None] = field(default=lambda: None)
    logs: Callable[[], str] = field(default=lambda: "")
    # What another process needs to stop it (container id, or server pid and files);
    # empty for servers nobody may stop (an existing URL, a server kept for reuse).
    record: dict[str, Any] = field(default_factory=dict)
    # Started by another xdist worker of this run: never stopped by this process.
    shared: bool = False


class BackendUnavailable(Exception):
    """This backend cannot serve here; the message says why and how to fix it."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fingerprint(*parts: str) -> str:
    """A short stable hash of what defines a server (image, settings, binaries...)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def last_lines(text: str, count: int = 15) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(f"    {line}" for line in lines[-count:])


def select_backend(dependency: str, forced: str, starters: Mapping[str, Callable[[], T]]) -> T:
    """Start the first backend that can serve, in DESIGN order, or the forced one.

    Each starter raises BackendUnavailable when its backend cannot serve here; when none
    can, the result is one Unavailable listing every backend's reason and fix. Any other
    error (a server that does not come up, say) is a real failure and propagates.
    """
    from depfakes.errors import DepfakesError
    from depfakes.providers.base import Unavailable

    if forced not in ("auto", *BACKENDS):
        raise DepfakesError(f"--deps-backend {dependency}={forced}: choose one of auto, "
                            f"{', '.join(BACKENDS)}")
    reasons = []
    for backend in BACKENDS if forced == "auto" else (forced,):
        try:
            return starters[backend]()
        except BackendUnavailable as exc:
            reasons.append(f"{backend}: {exc}")
    raise Unavailable("no backend can serve it (" + "; ".join(reasons) + ")")
