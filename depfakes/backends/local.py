"""The ``local`` backend: a server process started from binaries on this machine, in a
temporary directory, on a free loopback port.

Database servers refuse to run as root (PostgreSQL does); under root the process runs
as an unprivileged user instead, as CI images usually arrange by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from depfakes.backends import OWNER, BackendUnavailable, Server, last_lines, pid_alive

_UNPRIVILEGED = ("postgres", "mongodb", "nobody")


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


def spawn_server(command: Sequence[str], *, workdir: Path, user: pwd.struct_passwd | None,
                 port: int, ready: Callable[[str, int], bool], timeout: float,
                 description: str, reuse_key: str | None = None) -> Server:
    """Start ``command``, wait until ``ready(host, port)``; kill it again on failure.

    The server runs in its own session (so Ctrl-C in pytest does not hit it before depfakes
    stops it cleanly) and is recorded in the registry, so that if pytest is killed the next
    session stops it and removes its files. With ``reuse_key`` it is kept after the session
    for ``adopt_kept`` (and only ``depfakes down --all`` stops it).
    """
    sweep_dead_local_servers()
    log_path = workdir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=workdir, start_new_session=True,
                                   user=_uid(user), group=_gid(user))
    entry = _register(process.pid, workdir, description, port, reuse_key)

    def logs() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    def stop() -> None:
        _terminate(process)
        entry.unlink(missing_ok=True)

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready("127.0.0.1", port):
                if reuse_key:  # kept: nobody in this session stops it
                    return Server("local", "127.0.0.1", port, f"{description}, kept for reuse",
                                  logs=logs)
                return Server("local", "127.0.0.1", port, description, stop=stop, logs=logs,
                              record={"server_pid": process.pid, "workdir": str(workdir),
                                      "entry": str(entry)})
        if process.poll() is not None:
            entry.unlink(missing_ok=True)
            raise RuntimeError(f"{description} exited with code {process.returncode} before it "
                               f"was ready. Last log lines:\n{last_lines(logs())}")
        if time.monotonic() > deadline:
            stop()
            raise TimeoutError(f"{description} was not ready within {timeout:g} s. "
                               f"Last log lines:\n{last_lines(logs())}")
        time.sleep(0.01)


def registry_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "depfakes" / "local-servers"


def _register(server_pid: int, workdir: Path, description: str, port: int,
              reuse_key: str | None) -> Path:
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True)
    entry = directory / f"{OWNER.pid}-{server_pid}.json"
    entry.write_text(json.dumps({
        "owner_pid": OWNER.pid, "server_pid": server_pid, "workdir": str(workdir),
        "description": description, "host": socket.gethostname(), "port": port,
        "reuse_key": reuse_key,
    }))
    return entry


def kept_workdir(reuse_key: str) -> Path:
    """Where a kept server's files live: outside any session's temporary directory, and
    reachable by the unprivileged user the server may run as."""
    return Path(tempfile.gettempdir()) / f"depfakes-kept-{reuse_key}"


def adopt_kept(reuse_key: str, ready: Callable[[str, int], bool]) -> Server | None:
    """The server a previous session kept under ``reuse_key``, if it still answers."""
    for server in local_servers():
        if server.get("reuse_key") != reuse_key or not _is_our_server(
                int(server["server_pid"]), server["workdir"]):
            continue
        with contextlib.suppress(Exception):
            if ready("127.0.0.1", int(server["port"])):
                return Server("local", "127.0.0.1", int(server["port"]),
                              f"{server['description']}, reused")
    return None


def local_servers() -> list[dict[str, Any]]:
    """Registered local servers of this host, each with whether its session is alive."""
    servers = []
    for entry in sorted(registry_dir().glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(entry.read_text())
            if data.get("host") == socket.gethostname():
                data["entry"] = entry
                data["reused"] = bool(data.get("reuse_key"))
                data["alive"] = data["reused"] or pid_alive(int(data["owner_pid"]))
                servers.append(data)
    return servers


def sweep_dead_local_servers(include_live: bool = False) -> list[str]:
    """Stop servers whose pytest session is gone (all of them with ``include_live``), and
    remove their files. Returns their descriptions."""
    swept = []
    for server in local_servers():
        # A kept server whose process ended (a reboot, say) is only a stale entry.
        gone = server["reused"] and not _is_our_server(int(server["server_pid"]),
                                                       server["workdir"])
        if server["alive"] and not include_live and not gone:
            continue
        _kill_group(int(server["server_pid"]), server["workdir"])
        workdir = Path(server["workdir"])
        shutil.rmtree(workdir, ignore_errors=True)
        if workdir.parent.name.startswith("depfakes-"):
            shutil.rmtree(workdir.parent, ignore_errors=True)
        server["entry"].unlink(missing_ok=True)
        swept.append(str(server["description"]))
    return swept


def stop_recorded(server_pid: int, workdir: str, entry: str) -> None:
    """Stop a server another process of this session started (see Server.record)."""
    _kill_group(server_pid, workdir)
    Path(entry).unlink(missing_ok=True)


def _is_our_server(pid: int, workdir: str) -> bool:
    """Whether ``pid`` is still the server we started there (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return workdir in cmdline


def _kill_group(pid: int, workdir: str) -> None:
    """Kill the server's process group, if that pid is still our server."""
    if not _is_our_server(pid, workdir):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)  # PostgreSQL: fast shutdown
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _uid(user: pwd.struct_passwd | None) -> int | None:
    return None if user is None else user.pw_uid


def _gid(user: pwd.struct_passwd | None) -> int | None:
    return None if user is None else user.pw_gid
