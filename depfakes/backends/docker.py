"""The ``docker`` backend: a container started through testcontainers.

Containers publish their port on 127.0.0.1 only and carry labels naming the session,
its process and host, so that a later session can remove what a killed one left behind
(without Ryuk) and never touches a container whose session is still alive.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from depfakes.backends import OWNER, BackendUnavailable, Server, last_lines, pid_alive

LABEL_PREFIX = "io.depfakes"
LABEL_SESSION = f"{LABEL_PREFIX}.session"
LABEL_PID = f"{LABEL_PREFIX}.pid"
LABEL_HOST = f"{LABEL_PREFIX}.host"
LABEL_CONFIG = f"{LABEL_PREFIX}.config"
LABEL_REUSE = f"{LABEL_PREFIX}.reuse"


@dataclass
class ContainerSpec:
    image: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    tmpfs: Mapping[str, str] = field(default_factory=dict)
    # Called with (host, port) until it returns True; exceptions count as "not yet".
    ready: Callable[[str, int], bool] = lambda host, port: True
    timeout: float = 60.0
    config_hash: str = ""
    # With --deps-reuse: the container outlives the session, and a later session with the
    # same key (same project, same definition) adopts it instead of starting another.
    reuse_key: str | None = None


_IMPORT_LOCK = threading.Lock()


def import_docker() -> Any:
    """docker-py, imported under a lock: servers start in parallel threads, and two threads
    importing docker's submodules at once can see it half-initialised."""
    with _IMPORT_LOCK:
        try:
            import docker
            import docker.transport.unixconn
            import testcontainers.core.container  # noqa: F401 - same lock for its import
        except ImportError as exc:
            raise BackendUnavailable(
                f"docker-py/testcontainers could not be imported ({exc}); pip install "
                "'depfakes[postgres]'") from None
    return docker


def docker_client() -> Any:
    """A docker-py client, or BackendUnavailable saying why the daemon can't be reached."""
    docker = import_docker()
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:
        raise BackendUnavailable(
            f"the Docker daemon is not reachable ({_short(exc)}); start Docker or set "
            "DOCKER_HOST"
        ) from None
    return client


def ensure_image(client: Any, image: str) -> None:
    docker = import_docker()

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except Exception as exc:
        raise BackendUnavailable(
            f"image {image} is not present locally and could not be pulled ({_short(exc)}); "
            "pull or build it, or point depfakes at an image you have"
        ) from None


def start_container(spec: ContainerSpec) -> Server:
    """Start ``spec`` and wait until it is ready; remove it again on any failure."""
    client = docker_client()
    sweep_dead_sessions(client)
    if spec.reuse_key:
        adopted = _adopt(client, spec)
        if adopted is not None:
            return adopted
    ensure_image(client, spec.image)
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(spec.image)
    for key, value in spec.env.items():
        container.with_env(key, value)
    if spec.command:
        container.with_command(spec.command)
    # Published on loopback only: never reachable from other machines.
    # docker-py takes (ip,) for "this ip, any free port"; testcontainers' hint is narrower.
    container.ports[f"{spec.port}/tcp"] = ("127.0.0.1",)  # type: ignore[assignment]
    for path, options in spec.tmpfs.items():
        container.with_tmpfs_mount(path, options or None)
    labels = session_labels(spec.config_hash)
    if spec.reuse_key:  # no pid label: sweeps of dead sessions must not remove it
        del labels[LABEL_PID]
        labels[LABEL_REUSE] = spec.reuse_key
    container.with_kwargs(labels=labels)
    try:
        with _without_ryuk():
            container.start()
        host_port = _published_port(container.get_wrapped_container(), spec.port)
        _wait_ready(container, spec, host_port)
    except BaseException:
        _remove(container)
        raise
    wrapped = container.get_wrapped_container()
    return Server(
        backend="docker", host="127.0.0.1", port=host_port,
        description=f"docker {spec.image} (container {wrapped.short_id}"
                    f"{', kept for reuse' if spec.reuse_key else ''})",
        stop=(lambda: None) if spec.reuse_key else (lambda: _remove(container)),
        logs=lambda: _logs(container),
        record={} if spec.reuse_key else {"container": wrapped.id},
    )


@contextlib.contextmanager
def _without_ryuk() -> Iterator[None]:
    """Start without testcontainers' Ryuk reaper: depfakes removes its containers itself
    (at session end, and by label after a killed session), and Ryuk's image must come from
    a registry that strict networks do not reach. The user's setting is restored once no
    start is in progress (starts run in parallel threads, so a lock would serialise them)."""
    from testcontainers.core.config import testcontainers_config

    with _RYUK_LOCK:
        if not _RYUK_USERS:
            _RYUK_USERS.append(testcontainers_config.ryuk_disabled)  # the user's value
            testcontainers_config.ryuk_disabled = True
        _RYUK_USERS.append(True)
    try:
        yield
    finally:
        with _RYUK_LOCK:
            _RYUK_USERS.pop()
            if len(_RYUK_USERS) == 1:
                testcontainers_config.ryuk_disabled = _RYUK_USERS.pop()


_RYUK_LOCK = threading.Lock()
# While starts are in progress: [the user's setting, then one entry per start].
_RYUK_USERS: list[bool] = []


def _adopt(client: Any, spec: ContainerSpec) -> Server | None:
    """The running container a previous session left for this reuse key, if it answers."""
    for wrapped in client.containers.list(filters={"label": f"{LABEL_REUSE}={spec.reuse_key}"}):
        try:
            port = _published_port(wrapped, spec.port)
            if spec.ready("127.0.0.1", port):
                return Server(
                    backend="docker", host="127.0.0.1", port=port,
                    description=f"docker {spec.image} (container {wrapped.short_id}, reused)",
                    stop=lambda: None, logs=_logs_of(wrapped))
        except Exception:  # not ready or half gone: start a fresh one instead
            continue
    return None


def diagnose_image(image: str) -> tuple[bool, str]:
    """Can the docker backend serve ``image`` here? Checks the daemon and the image."""
    try:
        client = docker_client()
    except BackendUnavailable as exc:
        return False, str(exc)
    docker = import_docker()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return True, (f"Docker reachable; image {image} not present locally: the first run "
                      "pulls it (fails where no registry is reachable)")
    return True, f"Docker reachable; image {image} present"


def pinned_image(image: str, version: str | None, suffix: str = "") -> str:
    """``image`` with its tag replaced by a version pin (``postgres:16`` + pin 15 ->
    ``postgres:15``), or ``image`` itself when nothing is pinned."""
    if not version:
        return image
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}:{version}{suffix}"


def session_labels(config_hash: str = "") -> dict[str, str]:
    return {LABEL_SESSION: OWNER.session, LABEL_PID: str(OWNER.pid),
            LABEL_HOST: socket.gethostname(), LABEL_CONFIG: config_hash}


def sweep_dead_sessions(client: Any) -> list[str]:
    """Remove containers left by depfakes sessions on this host whose process is gone."""
    removed = []
    host = socket.gethostname()
    for container in client.containers.list(all=True, filters={"label": LABEL_PID}):
        labels = container.labels
        if labels.get(LABEL_HOST) != host or pid_alive(int(labels.get(LABEL_PID, "0"))):
            continue
        with contextlib.suppress(Exception):  # another session may be sweeping it too
            container.remove(force=True, v=True)
            removed.append(container.short_id)
    return removed


def _published_port(container: Any, port: int) -> int:
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
            return int(binding["HostPort"])
    raise BackendUnavailable(f"container port {port} was not published on 127.0.0.1")


def _wait_ready(container: Any, spec: ContainerSpec, host_port: int) -> None:
    deadline = time.monotonic() + spec.timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if spec.ready("127.0.0.1", host_port):
                return
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise RuntimeError(f"container from {spec.image} exited before it was ready "
                               f"(status {wrapped.status}). Last log lines:\n"
                               f"{last_lines(_logs(container))}")
        time.sleep(0.02)  # testcontainers' 1 s default would dominate start-up
    raise TimeoutError(f"{spec.image} was not ready within {spec.timeout:g} s. "
                       f"Last log lines:\n{last_lines(_logs(container))}")


def _logs_of(wrapped: Any) -> Callable[[], str]:
    """The last log lines of a docker-py container, or why they cannot be had."""
    def logs() -> str:
        try:
            return str(wrapped.logs(tail=50).decode(errors="replace"))
        except Exception as exc:
            return f"(logs unavailable: {_short(exc)})"

    return logs


def _logs(container: Any) -> str:
    return _logs_of(container.get_wrapped_container())()


def remove_container(container_id: str) -> None:
    """Remove a container this or another process of the session started."""
    docker = import_docker()

    client = docker_client()
    try:
        _remove_wrapped(client.containers.get(container_id))
    except docker.errors.NotFound:
        pass
    finally:
        client.close()


def _remove(container: Any) -> None:
    wrapped = getattr(container, "_container", None)
    if wrapped is None:
        return
    _remove_wrapped(wrapped)
    with contextlib.suppress(Exception):
        container.get_docker_client().client.close()


def _remove_wrapped(wrapped: Any) -> None:
    """Remove the container, retrying: a container that is still exiting can refuse once."""
    docker = import_docker()

    for _ in range(20):
        try:
            wrapped.remove(force=True, v=True)
        except docker.errors.NotFound:
            return
        except Exception:
            time.sleep(0.25)
            continue
        _wait_gone(wrapped)
        return


def _wait_gone(wrapped: Any) -> None:
    """Return once the engine no longer lists the container (removal can lag a little)."""
    docker = import_docker()

    for _ in range(50):
        try:
            wrapped.reload()
        except docker.errors.NotFound:
            return
        except Exception:
            return  # the engine went away; nothing more to wait for
        time.sleep(0.1)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
