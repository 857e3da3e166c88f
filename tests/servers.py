"""Real servers for the project's own tests, and the checks that skip (or, under CI, fail)
tests whose server this machine lacks."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


def local_ok() -> bool:
    from depfakes.backends import BackendUnavailable
    from depfakes.providers.postgres import _find_bindir

    try:
        _find_bindir(None)
    except BackendUnavailable:
        return False
    return True


def need(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide {why}")
        pytest.skip(f"needs {why}")


@contextlib.contextmanager
def postgres_server(**settings: str) -> Iterator[str]:
    """A PostgreSQL server started by hand (as a shared CI server would be), with a
    password; yields its admin URL."""
    need(local_ok(), "PostgreSQL binaries")
    from depfakes.backends import local
    from depfakes.providers.postgres import PostgresBinaries, _ready

    # Not under pytest's 0700 basetemp: the server may run as another user.
    workdir = Path(tempfile.mkdtemp(prefix="depfakes-url-server-"))
    workdir.chmod(0o755)
    user, port = local.run_as(), local.free_port()
    launch = PostgresBinaries(None).prepare(workdir, port, user)
    for name, value in settings.items():
        launch.command.extend(["-c", f"{name}={value}"])
    local.give_to(workdir, user)
    server = local.spawn_server(launch, workdir=workdir, user=user, port=port, ready=_ready,
                                timeout=30)
    try:
        yield launch.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def network_host(namespace: str, outside_ip: str, host_ip: str) -> Iterator[_OnHost]:
    """Another network host: a network namespace joined to this one by a veth pair
    (``outside_ip`` on this side, ``host_ip`` in it), nothing else reachable from it.
    Yields a runner for commands on that host (with the local Docker socket hidden)."""
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    outside, inside = f"{namespace[:10]}-o", f"{namespace[:10]}-i"
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)  # a stale one
    subprocess.run(["ip", "link", "del", outside], capture_output=True)
    ip("netns", "add", namespace)
    try:
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", namespace)
        ip("addr", "add", f"{outside_ip}/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("-n", namespace, "addr", "add", f"{host_ip}/30", "dev", inside)
        ip("-n", namespace, "link", "set", inside, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        yield _OnHost(namespace)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)


@contextlib.contextmanager
def docker_forwarder(namespace: str, engine_ip: str, host_ip: str) -> Iterator[_OnHost]:
    """Another network host that reaches this machine's Docker engine only over TCP, at
    ``tcp://engine_ip:2375`` (the engine's socket forwarded there)."""
    with network_host(namespace, engine_ip, host_ip) as on_host:
        listener = _forward_tcp_to_unix((engine_ip, 2375), "/var/run/docker.sock")
        try:
            yield on_host
        finally:
            listener.close()


class _OnHost:
    """Runs commands on a simulated host: in its network namespace, the local Docker
    socket hidden."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _command(self, command: list[str]) -> list[str]:
        hide = "mount --bind /dev/null /run/docker.sock && exec \"$@\""
        return ["ip", "netns", "exec", self.namespace, "unshare", "-m", "sh", "-c", hide, "_",
                *command]

    def __call__(self, command: list[str], cwd: Path, env: dict[str, str]) -> Any:
        return subprocess.run(self._command(command), cwd=cwd, capture_output=True, text=True,
                              timeout=300, env={**os.environ, **env})

    def popen(self, command: list[str], cwd: Path, env: dict[str, str]) -> Any:
        return subprocess.Popen(self._command(command), cwd=cwd, env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _forward_tcp_to_unix(address: tuple[str, int], path: str) -> socket.socket:
    """Accept TCP connections on ``address`` and splice each to the Unix socket ``path``,
    in daemon threads, until the returned listening socket is closed."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(address)
    listener.listen(64)

    def pump(source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: stop
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(path)
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener
