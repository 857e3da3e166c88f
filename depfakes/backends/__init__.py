"""How a real server is obtained: one registered layer of backends.

Each way of getting a server is one ``Backend`` subclass in its own file: ``url`` (an
existing server), ``docker`` (a container through testcontainers), ``local`` (binaries on
this machine), or a third party's. A backend can say whether it can serve here
(``diagnose``), ``start`` a server (adopting one kept by ``--deps-reuse``), list the
servers it started (``listing``, for ``depfakes ps`` / ``down``) and stop one another
process recorded (``stop_recorded``, for pytest-xdist). It owns its settings.

Providers never start servers: they describe what they need in a ``ServerSpec`` and
call ``obtain(spec, ctx)``, which picks the backend (the forced one, or the first in
``auto`` order that can serve), shares the server between xdist workers, and holds this
session's lease on it until ``Server.stop``.

Ownership works across machines: what a session creates on a server (databases, and
the server itself when it is a container) is named by its session id, and the session
holds a *lease* inside that server (a PostgreSQL advisory lock, say) that the server
releases by itself when the session's connection dies. A process id is only trusted on
the host identity that recorded it (same boot, same PID namespace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from depfakes.config import Setting
from depfakes.errors import DepfakesError

if TYPE_CHECKING:
    from depfakes.config import Settings
    from depfakes.providers.base import Provider, StartContext

# This process's session: names its own databases and holds its leases.
SESSION_ID = uuid.uuid4().hex[:12]
# Held while a start thread imports packages (see Runtime._preload).
IMPORT_LOCK = threading.RLock()
ENTRY_POINT_GROUP = "depfakes.backends"


def fingerprint(*parts: str) -> str:
    """A short stable hash of what defines a server (image, settings, binaries...)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def _host_identity() -> str:
    """This host as process ids see it: the same hostname, boot and PID namespace. Two
    CI runners (or two PID namespaces on one machine) never share it."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return fingerprint(*parts)


@dataclass
class Owner:
    """Whose servers these are. ``session`` labels what this process starts; under
    pytest-xdist it is the controller's, which outlives every worker (backends.shared)."""

    session: str
    pid: int
    host: str

    def sessions(self) -> list[str]:
        """The sessions this process holds leases for: its own and its run's."""
        return list(dict.fromkeys((SESSION_ID, self.session)))


OWNER = Owner(SESSION_ID, os.getpid(), _host_identity())


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists in this PID namespace. Only meaningful for
    pids recorded under ``OWNER.host``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(host: str, pid: int) -> bool | None:
    """Whether a recorded owner is alive, or None when that cannot be told from here
    (another host: ask the server's lease instead)."""
    return pid_alive(pid) if host == OWNER.host else None


# In a diagnosis: a backend usable only once it reaches a registry (an image to pull);
# the doctor then also names the backend a run would fall back to.
NEEDS_PULL = "needs a pull"


class BackendUnavailable(Exception):
    """This backend cannot serve here; the message says why and how to fix it."""


# --- what providers describe --------------------------------------------------------


@dataclass(frozen=True)
class ServerInfo:
    """What kind of server a provider needs, known without starting anything (for
    settings, ``depfakes doctor`` and ``--deps-backend`` validation)."""

    image: str                    # default docker image
    port: int                     # the port it listens on (in a container, by default)
    url_scheme: str | None = None  # e.g. "postgresql": an existing server can be given by URL
    pin_suffix: str = ""          # appended to a pinned tag of the default image ("-alpine")
    # Backends the provider itself implements (redis: "fake"), chosen by default.
    own_backends: tuple[str, ...] = ()


class Lease(Protocol):
    """A session's claim on a server, which the server drops when the session's
    connection dies (PostgreSQL advisory locks, a MongoDB heartbeat document...)."""

    def hold(self, url: str, sessions: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        """Hold the lease of each session until the context ends."""
        ...

    def held(self, url: str, session: str) -> bool:
        """Whether some live process holds ``session``'s lease on that server."""
        ...


@dataclass(frozen=True)
class LocalLaunch:
    """How to run a server from local binaries in a prepared directory."""

    command: list[str]
    url: str            # the admin URL, credentials included
    description: str


class LocalRecipe(ABC):
    """A provider's way of running its server from binaries on this machine."""

    # What identifies the binaries (path and version), for reuse keys and messages.
    identity: str
    # Under root, run as an unprivileged user (database servers refuse root).
    unprivileged: bool = True

    @abstractmethod
    def prepare(self, workdir: Path, port: int, user: Any) -> LocalLaunch:
        """Put the server's files into ``workdir`` (owned by ``user`` afterwards)."""


@dataclass
class ServerSpec:
    """One server a provider needs: what to run and how to tell it is ready."""

    dependency: str
    version: str | None
    info: ServerInfo
    # The admin URL of a server at host:port; ``secret`` is the password the backend
    # generated for it (docker) or None.
    url: Callable[[str, int, str | None], str]
    # Raises (or returns False) until the server at this URL answers.
    ready: Callable[[str], object]
    env: Callable[[str | None], Mapping[str, str]] = lambda secret: {}
    command: Callable[[str | None], list[str]] = lambda secret: []
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    # The directory the image initializes at its first start (PostgreSQL's PGDATA): the
    # docker backend initializes it once per image and copies it in (docker_seed.py).
    data_dir: str | None = None
    # Built lazily: finding binaries can run them (the docker path never needs it).
    local: Callable[[], LocalRecipe] | None = None
    lease: Lease | None = None
    # More of what defines the server (settings), for reuse keys and config labels.
    definition: tuple[str, ...] = ()
    # Checked once a server is obtained (e.g. its version against the pin).
    check: Callable[[Server], None] = lambda server: None
    # One server for all xdist workers (False: one each, e.g. a Redis flushed per test).
    shared_by_workers: bool = True

    @property
    def label(self) -> str:
        return f"{self.dependency}:{self.version}" if self.version else self.dependency


@dataclass
class Server:
    """A running server, reachable from this machine at ``url`` (credentials included)."""

    backend: str
    host: str
    port: int
    url: str
    description: str
    stop: Callable[[], None] = field(default=lambda: None)
    logs: Callable[[], str] = field(default=lambda: "")
    # What another process needs to stop it (the backend's own fields); empty for servers
    # nobody may stop (an existing URL, a server kept for reuse).
    record: dict[str, Any] = field(default_factory=dict)
    # Started by another xdist worker of this run: never stopped by this process.
    shared: bool = False


@dataclass
class Listed:
    """One server a backend started, as ``depfakes ps`` shows it."""

    backend: str
    id: str
    state: str        # "session alive", "session gone", "kept (reuse)", "other host"
    what: str
    project: str
    remove: Callable[[], None]

    @property
    def removable_by_default(self) -> bool:
        return self.state == "session gone"


# --- backends -----------------------------------------------------------------------


class Backend(ABC):
    """One way of getting a server. Subclasses with a ``name`` register themselves."""

    name: ClassVar[str]
    # Tried by --deps-backend NAME=auto (in registration order); opt-in backends are not.
    auto: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTERED[cls.name] = cls

    @classmethod
    def settings_for(cls, dependency: str, info: ServerInfo) -> tuple[Setting, ...]:
        """The settings this backend adds for one dependency (e.g. postgres_url)."""
        return ()

    @classmethod
    def serves(cls, provider: type[Provider]) -> bool:
        return provider.server_info is not None

    @classmethod
    @abstractmethod
    def diagnose(cls, provider: type[Provider], settings: Settings) -> tuple[bool, str]:
        """Can this backend serve ``provider`` here, and why (not)? Starts nothing."""

    def identity(self, spec: ServerSpec, ctx: StartContext) -> str | None:
        """What makes two specs the same server (an image, binaries, a URL): providers of
        one dependency whose specs agree (``postgres`` and ``postgres:15`` resolving to one
        image) share one server in a process. None: never shared."""
        return None

    @abstractmethod
    def start(self, spec: ServerSpec, ctx: StartContext) -> Server:
        """A ready server for ``spec`` (one kept by --deps-reuse when there is one), or
        BackendUnavailable when this backend cannot serve here."""

    @classmethod
    def listing(cls) -> tuple[list[Listed], str | None]:
        """Servers this backend started on this host, and why it could not look."""
        return [], None

    @classmethod  # noqa: B027 - optional hook
    def stop_recorded(cls, record: Mapping[str, Any]) -> None:
        """Stop a server another process recorded (Server.record)."""


_REGISTERED: dict[str, type[Backend]] = {}
_BUILTINS = ("depfakes.backends.url", "depfakes.backends.docker", "depfakes.backends.local",
             "depfakes.backends.secantus")
_AUTO_ORDER = ("url", "docker", "local")  # DESIGN §3: an existing server first
_loaded = False


def registered() -> dict[str, type[Backend]]:
    """Every backend by name, built-ins first (their order is ``auto``'s)."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTINS:
            importlib.import_module(module)
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            entry_point.load()  # subclassing Backend registers it
    builtins = [name for name in _AUTO_ORDER if name in _REGISTERED]
    return {name: _REGISTERED[name] for name in [*builtins, *_REGISTERED]}


def choices_for(provider: type[Provider]) -> list[str]:
    """What ``--deps-backend NAME=...`` accepts for this provider."""
    own = provider.server_info.own_backends if provider.server_info else ()
    return ["auto", *own, *(name for name, b in registered().items() if b.serves(provider))]


def validate_choices(forced: Mapping[str, str], providers: Mapping[str, type[Provider]]) -> None:
    """Fail the session up front for ``--deps-backend`` entries that cannot mean anything."""
    for name, backend in forced.items():
        if name not in providers:
            raise DepfakesError(f"--deps-backend {name}={backend}: unknown dependency "
                                f"'{name}'; known: {', '.join(sorted(providers))}")
        choices = choices_for(providers[name])
        if backend not in choices:
            raise DepfakesError(f"--deps-backend {name}={backend}: '{name}' can use "
                                f"{', '.join(choices)}")


def backend_settings(dependency: str, info: ServerInfo) -> list[Setting]:
    """The settings every backend adds for a server-backed dependency."""
    found = {s.name: s for b in registered().values() for s in b.settings_for(dependency, info)}
    return list(found.values())  # a subclass of a built-in shares the built-in's settings


LAYER_SETTINGS = (
    Setting("start_timeout", "Seconds a server may take to become ready.", type="float",
            default=60.0),
)


def obtain(spec: ServerSpec, ctx: StartContext) -> Server:
    """The server for ``spec``: from the forced backend, else the first that can serve.

    A backend asked for by name runs or fails (never a skip); under ``auto`` a backend
    that cannot serve here is passed over, and when none can, the test is skipped with
    every backend's reason. This session's lease is held until ``Server.stop``.
    """
    from depfakes.providers.base import Unavailable

    cls = ctx.provider_class
    forced = ctx.settings.get("backend").get(spec.dependency, "auto")
    names = [forced] if forced != "auto" else [
        name for name, b in registered().items() if b.auto and b.serves(cls)]
    reasons = []
    for name in names:
        backend = registered()[name]()
        try:
            server = _start_once(backend, spec, ctx)
        except BackendUnavailable as exc:
            if forced != "auto":
                raise DepfakesError(f"--deps-backend {spec.dependency}={forced} was asked for "
                                    f"but cannot serve here: {exc}") from None
            reasons.append(f"{name}: {exc}")
            continue
        return server
    raise Unavailable("no backend can serve it (" + "; ".join(reasons) + ")")


def _start_once(backend: Backend, spec: ServerSpec, ctx: StartContext) -> Server:
    """The server for ``spec`` on ``backend``: one per identity in this process, stopped
    when its last user stops it; checked against each user's pin."""
    identity = backend.identity(spec, ctx)
    if identity is None:
        return _start_leased(backend, spec, ctx, spec.label)
    key = f"{backend.name}\0{spec.dependency}\0{identity}"
    with _IN_PROCESS_LOCK:
        lock = _IN_PROCESS_STARTS.setdefault(key, threading.Lock())
    with lock:  # two pins starting in parallel threads: one starts, one waits
        if key in _IN_PROCESS:
            server, users = _IN_PROCESS[key]
            spec.check(server)
            users.append(spec.label)
        else:
            # Under xdist the run's record is named by the identity too: every worker,
            # whichever pin it starts first, finds the same server.
            server = _start_leased(backend, spec, ctx, f"{spec.dependency} {identity}")
            _IN_PROCESS[key] = (server, [spec.label])

    def release() -> None:
        with lock:
            users = _IN_PROCESS[key][1]
            users.remove(spec.label)
            if not users:
                del _IN_PROCESS[key]
                server.stop()

    return dataclasses.replace(server, stop=release)


_IN_PROCESS: dict[str, tuple[Server, list[str]]] = {}
_IN_PROCESS_STARTS: dict[str, threading.Lock] = {}
_IN_PROCESS_LOCK = threading.Lock()


def _start_leased(backend: Backend, spec: ServerSpec, ctx: StartContext,
                  share_name: str) -> Server:
    server = _start_checked(backend, spec, ctx, share_name)
    from depfakes.network import allow_server_host

    allow_server_host(server.host)  # tests that also declare 'http' keep reaching it
    return _with_lease(spec, server)


def _start_checked(backend: Backend, spec: ServerSpec, ctx: StartContext,
                   share_name: str) -> Server:
    if backend.name == "url" or not spec.shared_by_workers:  # nothing to share
        server = backend.start(spec, ctx)
    else:  # under xdist: started by the first worker, adopted by the others
        server = ctx.server(f"{share_name} {backend.name}", lambda: backend.start(spec, ctx))
    try:
        spec.check(server)
    except BaseException:
        server.stop()
        raise
    return server


def _with_lease(spec: ServerSpec, server: Server) -> Server:
    if spec.lease is None:
        return server
    held = contextlib.ExitStack()
    try:
        held.enter_context(spec.lease.hold(server.url, OWNER.sessions()))
    except BaseException:
        server.stop()
        raise
    stop = server.stop

    def release_then_stop() -> None:
        held.close()
        stop()

    server.stop = release_then_stop
    return server


def reuse_key(spec: ServerSpec, ctx: StartContext, *definition: str) -> str | None:
    """With --deps-reuse, the key a kept server is found by: this project, and what defines
    the server (backend definition, version, settings)."""
    if not ctx.settings.get("reuse"):
        return None
    return fingerprint(str(ctx.config.rootpath), spec.dependency, *definition,
                       *spec.definition)


# --- small shared helpers -----------------------------------------------------------


def last_lines(text: str, count: int = 15) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(f"    {line}" for line in lines[-count:])


_SECRET_PARAM = re.compile(r"pass|secret|token|key$|sslkey", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` fit to print: the password and secret-like query parameters masked,
    everything else (host, database, sslmode...) kept."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostinfo}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    masked = [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in query]
    return urlunsplit(parts._replace(netloc=netloc,
                                     query=urlencode(masked, safe="/*") if query else ""))


def with_database(url: str, dbname: str, scheme: str | None = None) -> str:
    """``url`` naming ``dbname`` (and ``scheme``), every other part and parameter kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme,
                                     path="/" + quote(dbname, safe="")))


# --- files a session leaves in the temp dir -------------------------------------------

_OWNER_FILE = ".depfakes-owner"


def make_session_dir(prefix: str, parent: Path | None = None) -> Path:
    """A temp dir of this process's, marked so that a later session removes it if this
    one is killed (and never removes a directory it did not make)."""
    directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    directory.chmod(0o755)  # servers may run as an unprivileged user
    (directory / _OWNER_FILE).write_text(json.dumps({"host": OWNER.host, "pid": os.getpid()}))
    return directory


def sweep_session_dirs() -> list[str]:
    """Remove the marked temp dirs of processes on this host that are gone."""
    removed = []
    for marker in Path(tempfile.gettempdir()).glob(f"depfakes-*/{_OWNER_FILE}"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            owner = json.loads(marker.read_text())
            if owner_alive(owner["host"], int(owner["pid"])) is False:
                shutil.rmtree(marker.parent, ignore_errors=True)
                removed.append(str(marker.parent))
    return removed
