"""The ``local`` backend: a server process started from binaries on this machine, in a
temporary directory, on a free loopback port.

Database servers refuse to run as root (PostgreSQL does); under root the process runs
as an unprivileged user instead, as CI images usually arrange by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from depfakes.backends import BackendUnavailable, Server, last_lines

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
                 description: str) -> Server:
    """Start ``command``, wait until ``ready(host, port)``; kill it again on failure."""
    log_path = workdir / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=workdir, start_new_session=True,
                                   user=_uid(user), group=_gid(user))

    def logs() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    def stop() -> None:
        _terminate(process)

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if ready("127.0.0.1", port):
                return Server("local", "127.0.0.1", port, description, stop=stop, logs=logs)
        if process.poll() is not None:
            raise RuntimeError(f"{description} exited with code {process.returncode} before it "
                               f"was ready. Last log lines:\n{last_lines(logs())}")
        if time.monotonic() > deadline:
            stop()
            raise TimeoutError(f"{description} was not ready within {timeout:g} s. "
                               f"Last log lines:\n{last_lines(logs())}")
        time.sleep(0.01)


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
