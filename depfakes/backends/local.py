"""The ``local`` backend: a server process started from binaries on this machine, in a
temporary directory, on a free loopback port.

Database servers refuse to run as root (PostgreSQL does); under root the process runs
as an unprivileged user instead, as CI images usually arrange by hand.

Every server is recorded in a registry (one file each, mode 0600: it holds the server's
URL and password) with the paths depfakes created for it. A later session stops the
servers of processes that are gone and removes exactly those paths, nothing else. The
liveness of a server is its process (the pid, checked against the command line that
names its directory), never whether a connection succeeds.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from depfakes.backends import (
    OWNER,
    Backend,
    BackendUnavailable,
    Listed,
    LocalLaunch,
    LocalRecipe,
    Server,
    ServerSpec,
    fingerprint,
    last_lines,
    owner_alive,
    reuse_key,
)

if TYPE_CHECKING:
    from depfakes.config import Settings
    from depfakes.providers.base import Provider, StartContext

_UNPRIVILEGED = ("postgres", "mongodb", "nobody")


class LocalBackend(Backend):
    name = "local"
    summary = "a server process from binaries on this machine"

    @classmethod
    def serves(cls, provider: type[Provider]) -> bool:
        from depfakes.providers.base import Provider as Base

        return provider.server_info is not None and \
            provider.local_recipe.__func__ is not Base.local_recipe.__func__  # type: ignore[attr-defined]

    @classmethod
    def diagnose(cls, provider: type[Provider], settings: Settings) -> tuple[bool, str]:
        try:
            recipe = provider.local_recipe(None, settings)
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, recipe.identity

    def recipe(self, spec: ServerSpec) -> LocalRecipe:
        """What to run: the provider's own recipe (a subclass may bring another server)."""
        if spec.local is None:
            raise BackendUnavailable(f"{spec.dependency} cannot run from local binaries")
        return spec.local()

    def identity(self, spec: ServerSpec, ctx: StartContext) -> str | None:
        return self.recipe(spec).identity  # the binaries (path and version)

    def start(self, spec: ServerSpec, ctx: StartContext) -> Server:
        recipe = self.recipe(spec)
        key = reuse_key(spec, ctx, self.name, recipe.identity)
        sweep_dead_local_servers()
        if key is None:
            return _spawn(spec, ctx, recipe, ctx.workdir, None)
        with _kept_lock(key):  # two sessions starting at once: one starts, one adopts
            kept = _kept_entry(key)
            if kept is not None:
                return _adopt(spec, ctx, kept)
            workdir = kept_workdir(key)
            if workdir.exists():  # files we made for a kept server no registry names
                shutil.rmtree(workdir)
            workdir.mkdir(mode=0o755)
            try:
                return _spawn(spec, ctx, recipe, workdir, key)
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)  # ours, and no server runs there
                raise

    @classmethod
    def listing(cls) -> tuple[list[Listed], str | None]:
        found = []
        for entry in local_servers():
            state = ("kept (reuse)" if entry["reuse_key"] else
                     "session alive" if entry["alive"] else "session gone")
            found.append(Listed("local", str(entry["server_pid"]), state,
                                f"pid {entry['owner_pid']:<9}{entry['description']}",
                                str(entry.get("project", "")),
                                remove=functools.partial(_remove_server, entry)))
        return found, None

    @classmethod
    def stop_recorded(cls, record: Mapping[str, Any]) -> None:
        entry = _read_entry(Path(record["entry"]))
        if entry is not None:
            _remove_server(entry, remove_paths=False)


# --- starting -------------------------------------------------------------------------


def _spawn(spec: ServerSpec, ctx: StartContext, recipe: LocalRecipe, workdir: Path,
           key: str | None) -> Server:
    user = run_as() if recipe.unprivileged else None
    port = free_port()
    launch: LocalLaunch = recipe.prepare(workdir, port, user)
    give_to(workdir, user)
    return spawn_server(launch, workdir=workdir, user=user, port=port, ready=spec.ready,
                        timeout=ctx.settings.get("start_timeout"), reuse_key=key,
                        project=str(ctx.config.rootpath))


def _adopt(spec: ServerSpec, ctx: StartContext, entry: dict[str, Any]) -> Server:
    """A kept server whose process runs: wait for it to answer, never replace it."""
    url = str(entry["url"])
    deadline = time.monotonic() + ctx.settings.get("start_timeout")
    while True:
        try:
            spec.ready(url)
            break
        except Exception as exc:
            if not _is_our_server(int(entry["server_pid"]), entry["workdir"]):
                raise RuntimeError(f"the kept server {entry['description']} ended while "
                                   "this session adopted it; run again") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the kept server {entry['description']} runs but does not answer "
                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                    "it was left as it is. Stop it with `depfakes down --project`") from None
            time.sleep(0.05)
    return Server("local", "127.0.0.1", int(entry["port"]), url,
                  f"{entry['description']}, reused")


def spawn_server(launch: LocalLaunch, *, workdir: Path, user: pwd.struct_passwd | None,
                 port: int, ready: Callable[[str], object], timeout: float,
                 reuse_key: str | None = None, project: str = "") -> Server:
    """Run ``launch.command``, wait until ``ready(url)``; kill it again on failure.

    The server runs in its own session (so Ctrl-C in pytest does not hit it before depfakes
    stops it cleanly) and is recorded in the registry, so that if pytest is killed the next
    session stops it and removes its files. With ``reuse_key`` it is kept after the session
    for the next one (and only ``depfakes down --project`` / ``--all`` stops it).
    """
    log_path = workdir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(launch.command), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=workdir, start_new_session=True,
                                   user=_uid(user), group=_gid(user))
    entry = _register(process.pid, workdir, launch, port, reuse_key, project)

    def logs() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    def stop() -> None:
        _stop_gracefully(process.pid, str(workdir))
        entry.unlink(missing_ok=True)

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready(launch.url) is not False:
                _detach(process)
                if reuse_key:  # kept: nobody in this session stops it
                    return Server("local", "127.0.0.1", port, launch.url,
                                  f"{launch.description}, kept for reuse", logs=logs)
                return Server("local", "127.0.0.1", port, launch.url, launch.description,
                              stop=stop, logs=logs, record={"entry": str(entry)})
        if process.poll() is not None:
            entry.unlink(missing_ok=True)
            raise RuntimeError(f"{launch.description} exited with code {process.returncode} "
                               f"before it was ready. Last log lines:\n{last_lines(logs())}")
        if time.monotonic() > deadline:
            stop()
            raise TimeoutError(f"{launch.description} was not ready within {timeout:g} s. "
                               f"Last log lines:\n{last_lines(logs())}")
        time.sleep(0.01)


def _detach(process: subprocess.Popen[bytes]) -> None:
    """From now on the server is known by its pid (stopped by pid, reaped by waitpid),
    whichever process stops it: an xdist controller, the next session. Its Popen must not
    warn, when it is dropped, that the process still runs (an error under -W error)."""
    process.returncode = 0


# --- the registry ----------------------------------------------------------------------


def registry_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "depfakes" / "local-servers"


def _register(server_pid: int, workdir: Path, launch: LocalLaunch, port: int,
              reuse_key: str | None, project: str) -> Path:
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = directory / f"{OWNER.pid}-{server_pid}.json"
    data = {"owner_pid": OWNER.pid, "host": OWNER.host, "hostname": socket.gethostname(),
            "server_pid": server_pid, "workdir": str(workdir), "paths": [str(workdir)],
            "description": launch.description, "port": port, "url": launch.url,
            "reuse_key": reuse_key, "project": project}
    # 0600 from the start: the entry holds the server's password.
    fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    return entry


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    data["entry"] = path
    data.setdefault("reuse_key", None)
    alive = owner_alive(str(data.get("host", "")), int(data.get("owner_pid", 0)))
    data["alive"] = bool(data["reuse_key"]) or bool(alive)
    data["ours"] = alive is not None  # recorded under this host identity
    return data


def local_servers() -> list[dict[str, Any]]:
    """Registered local servers of this host identity, each with whether its session is
    alive. Entries of other hosts (or PID namespaces) sharing this cache are not ours."""
    entries = (_read_entry(path) for path in sorted(registry_dir().glob("*.json")))
    return [entry for entry in entries if entry is not None and entry["ours"]]


def kept_workdir(reuse_key: str) -> Path:
    """Where a kept server's files live: outside any session's temporary directory, and
    reachable by the unprivileged user the server may run as."""
    # Per host identity: another PID namespace sharing /tmp never sees (or removes) it.
    return Path(tempfile.gettempdir()) / f"depfakes-kept-{fingerprint(reuse_key, OWNER.host)}"


@contextlib.contextmanager
def _kept_lock(reuse_key: str) -> Iterator[None]:
    from filelock import FileLock

    registry_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(registry_dir() / f"kept-{fingerprint(reuse_key, OWNER.host)}.lock")):
        yield


def _kept_entry(reuse_key: str) -> dict[str, Any] | None:
    """The entry of the running server kept under ``reuse_key``; entries whose process
    ended (a reboot, an OOM kill) are removed with their files first."""
    for entry in local_servers():
        if entry["reuse_key"] != reuse_key:
            continue
        if _is_our_server(int(entry["server_pid"]), entry["workdir"]):
            return entry
        _remove_server(entry)
    return None


def sweep_dead_local_servers(include_live: bool = False) -> list[str]:
    """Stop servers whose pytest session is gone (all of them with ``include_live``), and
    remove the files recorded for them. Returns their descriptions."""
    swept = []
    for entry in local_servers():
        gone = entry["reuse_key"] and not _is_our_server(int(entry["server_pid"]),
                                                         entry["workdir"])
        if entry["alive"] and not include_live and not gone:
            continue
        _remove_server(entry)
        swept.append(str(entry["description"]))
    return swept


def _remove_server(entry: Mapping[str, Any], remove_paths: bool = True) -> None:
    """Stop the recorded server and remove the paths recorded for it (and only those)."""
    shm = _sysv_segment(Path(entry["workdir"]))
    _stop_gracefully(int(entry["server_pid"]), str(entry["workdir"]))
    if shm is not None:
        _remove_sysv_segment(shm)
    if remove_paths:
        for path in entry.get("paths", []):
            shutil.rmtree(path, ignore_errors=True)
    Path(entry["entry"]).unlink(missing_ok=True)


def _sysv_segment(workdir: Path) -> int | None:
    """The SysV shared memory id a PostgreSQL server records in postmaster.pid."""
    for pidfile in workdir.glob("*/postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(pidfile.read_text().splitlines()[6].split()[1])
    return None


def _remove_sysv_segment(shmid: int) -> None:
    """Remove a segment nobody is attached to any more (a server killed with -9 leaves it)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1]) == shmid and int(fields[6]) == 0:  # shmid, nattch
                libc = ctypes.CDLL(None, use_errno=True)
                libc.shmctl(ctypes.c_int(shmid), ctypes.c_int(0), None)  # IPC_RMID
                return


# --- processes ----------------------------------------------------------------------


def _is_our_server(pid: int, workdir: str) -> bool:
    """Whether ``pid`` is still the server we started there (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return workdir in cmdline


def _stop_gracefully(pid: int, workdir: str) -> None:
    """Stop the server's process group, if that pid is still our server: SIGINT first
    (PostgreSQL's fast shutdown releases its shared memory), SIGKILL after 10 s."""
    if not _is_our_server(pid, workdir):
        return
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        if _wait_exited(pid, timeout=10.0):
            return


def _wait_exited(pid: int, timeout: float) -> bool:
    """Wait until the process is gone (reaped, not only a zombie)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our child: reap it, or it lingers as a zombie
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- helpers for recipes ---------------------------------------------------------------


def find_binary(name: str, extra_dirs: Iterable[str | Path] = ()) -> Path | None:
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    return Path(found) if found else None


def run_as() -> pwd.struct_passwd | None:
    """The user to run servers as: None when not root, else the first unprivileged user."""
    if os.geteuid() != 0:
        return None
    for name in _UNPRIVILEGED:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise BackendUnavailable("running as root and no unprivileged user (postgres, nobody) "
                             "exists to run the server as; create one or run pytest as a user")


def give_to(path: Path, user: pwd.struct_passwd | None) -> None:
    """Make ``path`` (recursively) owned by ``user`` so the server can write there."""
    if user is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    os.chown(path, user.pw_uid, user.pw_gid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_checked(command: Sequence[str], user: pwd.struct_passwd | None, what: str) -> None:
    result = subprocess.run(list(command), capture_output=True, text=True,
                            user=_uid(user), group=_gid(user))
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n"
                           f"{last_lines(result.stdout + result.stderr)}")


def _uid(user: pwd.struct_passwd | None) -> int | None:
    return None if user is None else user.pw_uid


def _gid(user: pwd.struct_passwd | None) -> int | None:
    return None if user is None else user.pw_gid
