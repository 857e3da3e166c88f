"""The ``docker`` backend: a container started through testcontainers.

The engine is the one testcontainers would use (``DOCKER_HOST``, the docker context,
``TESTCONTAINERS_HOST_OVERRIDE``), and a container is reached at the address it gives
(``get_container_host_ip``), not assumed to be on 127.0.0.1: on a local engine ports
are published on loopback only; on a remote one (``tcp://docker:2375``) on the engine's
interfaces, so servers get a generated password instead of trust.

Containers carry labels naming the dependency, the session, its process and host
identity, so a later session removes what a killed one left behind (without Ryuk).
A container of another host is judged by its lease inside the server, never by a pid.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from depfakes.backends import (
    IMPORT_LOCK,
    NEEDS_PULL,
    OWNER,
    Backend,
    BackendUnavailable,
    Listed,
    Server,
    ServerInfo,
    ServerSpec,
    docker_seed,
    fingerprint,
    last_lines,
    owner_alive,
    reuse_key,
)
from depfakes.config import Setting

if TYPE_CHECKING:
    from depfakes.config import Settings
    from depfakes.providers.base import Provider, StartContext

LABEL_PREFIX = "io.depfakes"
LABEL_SESSION = f"{LABEL_PREFIX}.session"
LABEL_PID = f"{LABEL_PREFIX}.pid"
LABEL_HOST = f"{LABEL_PREFIX}.host"          # host identity (see backends.OWNER)
LABEL_HOSTNAME = f"{LABEL_PREFIX}.hostname"  # for people reading `depfakes ps`
LABEL_CONFIG = f"{LABEL_PREFIX}.config"
LABEL_REUSE = f"{LABEL_PREFIX}.reuse"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
LABEL_DEPENDENCY = f"{LABEL_PREFIX}.dependency"
LABEL_SECRET = f"{LABEL_PREFIX}.secret"  # a kept server's password, for the next session
_LOCALHOSTS = {"localhost", "127.0.0.1", "::1"}
# A container younger than this plus the start timeout may not hold its lease yet.
_LEASE_GRACE_SECONDS = 60.0


class DockerBackend(Backend):
    name = "docker"
    summary = "a container through testcontainers"

    @classmethod
    def settings_for(cls, dependency: str, info: ServerInfo) -> tuple[Setting, ...]:
        return (Setting(f"{dependency}_image", f"Docker image for the docker backend "
                        f"(default {info.image}); a version pin such as "
                        f"\"{dependency}:N\" replaces its tag.", default=info.image),)

    @classmethod
    def diagnose(cls, provider: type[Provider], settings: Settings) -> tuple[bool, str]:
        return diagnose_image(settings.get(f"{provider.name}_image"))

    def identity(self, spec: ServerSpec, ctx: StartContext) -> str | None:
        return f"{_image(spec, ctx)} {' '.join(spec.definition)}"

    def start(self, spec: ServerSpec, ctx: StartContext) -> Server:
        image = _image(spec, ctx)
        client = docker_client()
        # A younger container may still be starting, not yet holding its lease.
        sweep_dead_sessions(client, spec,
                            _LEASE_GRACE_SECONDS + float(ctx.settings.get("start_timeout")))
        key = reuse_key(spec, ctx, "docker", image)
        if key is None:
            return _start(client, spec, image, ctx, None)
        with _reuse_lock(key):  # two sessions starting at once: one starts, one adopts
            return _adopt(client, spec, image, key) or _start(client, spec, image, ctx, key)

    @classmethod
    def listing(cls) -> tuple[list[Listed], str | None]:
        try:
            client = docker_client()
        except BackendUnavailable as exc:
            return [], str(exc)
        found = []
        for container in client.containers.list(all=True, filters={"label": LABEL_SESSION}):
            labels = container.labels
            alive = owner_alive(labels.get(LABEL_HOST, ""), int(labels.get(LABEL_PID, "0")))
            state = ("kept (reuse)" if LABEL_REUSE in labels else "other host" if alive is None
                     else "session alive" if alive else "session gone")
            tags = container.image.tags
            found.append(Listed(
                "docker", container.short_id, state,
                f"pid {labels.get(LABEL_PID, '-'):<9}"
                f"{tags[0] if tags else container.image.short_id} ({container.status}, on "
                f"{labels.get(LABEL_HOSTNAME, '?')})",
                labels.get(LABEL_PROJECT, ""),
                remove=functools.partial(_remove_wrapped, container)))
        return found, None

    @classmethod
    def stop_recorded(cls, record: Mapping[str, Any]) -> None:
        remove_container(record["container"])


def _image(spec: ServerSpec, ctx: StartContext) -> str:
    """The configured image, its tag replaced by the version pin."""
    configured = ctx.settings.get(f"{spec.dependency}_image")
    return pinned_image(configured, spec.version,
                        suffix=spec.info.pin_suffix if configured == spec.info.image else "")


def _start(client: Any, spec: ServerSpec, image: str, ctx: StartContext,
           key: str | None, volume: tuple[str, str] | None = None,
           secret: str | None = None) -> Server:
    """Start a container for ``spec`` and wait until it is ready; remove it on failure.
    ``volume``: (name, path) mounted read-write; ``secret``: the password it must have."""
    ensure_image(client, image)
    from testcontainers.core.container import DockerContainer

    seed = docker_seed.seed_for(client, spec, image, lambda name, password: _initialize(
        client, spec, image, ctx, name, password))
    secret = seed.secret if seed else secret or secrets.token_urlsafe(18)
    container = DockerContainer(image)
    for name, value in spec.env(secret).items():
        container.with_env(name, value)
    command = spec.command(secret)
    if command:
        container.with_command(command)
    # docker-py takes (ip,) for "this ip, any free port": loopback for a local engine
    # (never reachable from other machines), every interface of a remote one.
    bind = "127.0.0.1" if _reached_on_loopback() else "0.0.0.0"
    container.ports[f"{spec.info.port}/tcp"] = (bind,)  # type: ignore[assignment]
    for path, options in spec.tmpfs.items():
        if volume is None or path != volume[1]:
            container.with_tmpfs_mount(path, options or None)
    kwargs: dict[str, Any] = {}
    if volume is not None:
        container.with_volume_mapping(volume[0], volume[1], "rw")
    if seed is not None:
        container.with_volume_mapping(seed.volume, docker_seed.MOUNT, "ro")
        kwargs["entrypoint"] = seed.entrypoint
    # The secret in a label: the next session (reuse), or another host's sweep, must be
    # able to log in; whoever reads labels controls the engine anyway.
    labels = {**_labels(spec, ctx, image), LABEL_SECRET: secret}
    if key:  # no pid label: sweeps of dead sessions must not remove it
        del labels[LABEL_PID]
        labels[LABEL_REUSE] = key
    container.with_kwargs(labels=labels, **kwargs)
    try:
        with _without_ryuk():
            container.start()
        host, port = _address_of_started(container.get_wrapped_container(), spec, image)
        url = spec.url(host, port, secret)
        _wait_ready(container.get_wrapped_container(), spec, image, url, ctx)
    except BaseException:
        _remove(container)
        raise
    wrapped = container.get_wrapped_container()
    return Server(
        backend="docker", host=host, port=port, url=url,
        description=f"docker {image} (container {wrapped.short_id}"
                    f"{', kept for reuse' if key else ''} at {host}:{port})",
        stop=(lambda: None) if key else (lambda: _remove(container)),
        logs=_logs_of(wrapped),
        record={} if key else {"container": wrapped.id},
    )


def _initialize(client: Any, spec: ServerSpec, image: str, ctx: StartContext, volume: str,
                secret: str) -> None:
    """Run the image on ``volume`` (its data directory) until ready, then stop it cleanly:
    the volume holds an initialized data directory with ``secret`` as the password."""
    import dataclasses

    assert spec.data_dir is not None
    ctx.status(f"initializing {image}'s data directory once (a docker volume)")
    server = _start(client, dataclasses.replace(spec, data_dir=None), image, ctx, None,
                    volume=(volume, spec.data_dir), secret=secret)
    try:
        client.containers.get(server.record["container"]).stop(timeout=30)
    finally:
        server.stop()


def _labels(spec: ServerSpec, ctx: StartContext, image: str) -> dict[str, str]:
    return {LABEL_SESSION: OWNER.session, LABEL_PID: str(OWNER.pid), LABEL_HOST: OWNER.host,
            LABEL_HOSTNAME: socket.gethostname(), LABEL_DEPENDENCY: spec.dependency,
            LABEL_PROJECT: str(ctx.config.rootpath),
            LABEL_CONFIG: fingerprint(image, *spec.definition)}


def _adopt(client: Any, spec: ServerSpec, image: str, key: str) -> Server | None:
    """The running container a previous session kept for this reuse key, if it answers."""
    for wrapped in client.containers.list(filters={"label": f"{LABEL_REUSE}={key}"}):
        try:
            host, port = _address(wrapped, spec.info.port)
            url = spec.url(host, port, wrapped.labels.get(LABEL_SECRET))
            spec.ready(url)
        except Exception:  # not ready or half gone: start a fresh one instead
            continue
        return Server("docker", host, port, url,
                      f"docker {image} (container {wrapped.short_id}, reused, at "
                      f"{host}:{port})", logs=_logs_of(wrapped))
    return None


@contextlib.contextmanager
def _reuse_lock(key: str) -> Iterator[None]:
    import tempfile

    from filelock import FileLock

    with FileLock(str(Path(tempfile.gettempdir()) / f"depfakes-reuse-{key}.lock")):
        yield


def import_docker() -> Any:
    """docker-py, imported under a lock: servers start in parallel threads, and two threads
    importing docker's submodules at once can see it half-initialised."""
    with IMPORT_LOCK:
        try:
            import docker
            import docker.transport.unixconn
            import testcontainers.core.container
            import testcontainers.core.docker_client  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(
                f"docker-py/testcontainers could not be imported ({exc}); pip install "
                "'depfakes[postgres]' (or testcontainers)") from None
    return docker


def docker_client() -> Any:
    """A docker-py client for the engine testcontainers would use (DOCKER_HOST, the docker
    context), or BackendUnavailable saying why it can't be reached."""
    import_docker()
    from urllib.parse import urlsplit

    from testcontainers.core.docker_client import DockerClient

    from depfakes.network import allow_server_host

    # A remote engine must stay reachable while a test that declares 'http' runs.
    allow_server_host(urlsplit(os.environ.get("DOCKER_HOST", "")).hostname or "")
    try:
        client = DockerClient(timeout=10).client
        allow_server_host(urlsplit(str(client.api.base_url)).hostname or "")
        client.ping()
        allow_server_host(_testcontainers_client().host())
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the local socket"
        raise BackendUnavailable(
            f"the Docker engine at {where} is not reachable ({_short(exc)}); start Docker "
            "or set DOCKER_HOST") from None
    return client


@functools.lru_cache(maxsize=1)
def _testcontainers_client() -> Any:
    """testcontainers' own client, whose rules say where containers are reached
    (DOCKER_HOST, TESTCONTAINERS_HOST_OVERRIDE, the gateway or bridge inside a container)."""
    from testcontainers.core.docker_client import DockerClient

    return DockerClient()


@functools.lru_cache(maxsize=1)
def _reached_on_loopback() -> bool:
    """Whether this machine reaches published ports on the engine's loopback: a local
    engine, or (inside a container, where testcontainers would use the gateway) an engine
    that runs on this very host. Ports are then published on loopback only."""
    from testcontainers.core.config import ConnectionMode

    tc = _testcontainers_client()
    if tc.get_connection_mode() == ConnectionMode.docker_host:
        return tc.host() in _LOCALHOSTS
    try:
        return bool(tc.client.info().get("Name") == socket.gethostname())
    except Exception:
        return False


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


def diagnose_image(image: str) -> tuple[bool, str]:
    """Can the docker backend serve ``image`` here? Checks the engine and the image."""
    try:
        client = docker_client()
    except BackendUnavailable as exc:
        return False, str(exc)
    docker = import_docker()
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return True, (f"Docker reachable; {NEEDS_PULL}: image {image} is not present locally "
                      f"(where no registry is reachable: build or load it, or point the "
                      f"image setting at a local one)")
    return True, f"Docker reachable; image {image} present"


def pinned_image(image: str, version: str | None, suffix: str = "") -> str:
    """``image`` with its tag replaced by a version pin (``postgres:16`` + pin 15 ->
    ``postgres:15``), or ``image`` itself when nothing is pinned."""
    if not version:
        return image
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}:{version}{suffix}"


def sweep_dead_sessions(client: Any, spec: ServerSpec | None = None,
                        grace: float = _LEASE_GRACE_SECONDS + 60.0) -> list[str]:
    """Remove containers of depfakes sessions that are gone: on this host by their pid;
    of another host (a shared engine) only when ``spec``'s lease says nobody holds them
    and the container is older than ``grace`` seconds."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_PID}):
        if _owner_gone(container, spec, grace):
            with contextlib.suppress(Exception):  # another session may be sweeping it too
                container.remove(force=True, v=True)
                removed.append(container.short_id)
    return removed


def _owner_gone(container: Any, spec: ServerSpec | None, grace: float) -> bool:
    labels = container.labels
    alive = owner_alive(labels.get(LABEL_HOST, ""), int(labels.get(LABEL_PID, "0")))
    if alive is not None:
        return not alive
    if spec is None or spec.lease is None or labels.get(LABEL_DEPENDENCY) != spec.dependency:
        return False
    if time.time() - _created(container) < grace:
        return False
    if container.status != "running":
        return True
    try:
        host, port = _address(container, spec.info.port)
        url = spec.url(host, port, labels.get(LABEL_SECRET))
        return not spec.lease.held(url, labels[LABEL_SESSION])
    except Exception:  # cannot tell: leave it
        return False


def _created(container: Any) -> float:
    from datetime import datetime

    text = str(container.attrs.get("Created", ""))[:26].rstrip("Z")
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:
        return time.time()


def _address_of_started(wrapped: Any, spec: ServerSpec, image: str) -> tuple[str, int]:
    """The address of a container just started; one that already exited (so publishes
    nothing) is reported as exited, with its log."""
    try:
        return _address(wrapped, spec.info.port)
    except BackendUnavailable:
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise RuntimeError(f"container from {image} exited before it was ready "
                               f"(status {wrapped.status}). Last log lines:\n"
                               f"{last_lines(_logs_of(wrapped)())}") from None
        raise


def _address(container: Any, port: int) -> tuple[str, int]:
    """Where this machine reaches the container's ``port``, by testcontainers' rules
    (``get_container_host_ip`` / ``get_exposed_port``): the engine's host and the
    published port, or the container's bridge address and the port itself."""
    from testcontainers.core.config import ConnectionMode

    from depfakes.network import allow_server_host

    tc = _testcontainers_client()
    mode = tc.get_connection_mode()
    if _reached_on_loopback():
        direct = _bridge_address(container)
        if direct is not None:
            allow_server_host(direct)
            return direct, port
        host = "127.0.0.1"
    elif mode == ConnectionMode.bridge_ip:
        allow_server_host(tc.bridge_ip(container.id))
        return tc.bridge_ip(container.id), port
    else:
        host = tc.host() if mode == ConnectionMode.docker_host else tc.gateway_ip(container.id)
    allow_server_host(host)  # reached while a test that declares 'http' runs, perhaps
    container.reload()
    bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{port}/tcp") or []
    for binding in bindings:
        if binding.get("HostPort"):
            if binding.get("HostIp") in ("127.0.0.1", "::1") and host not in _LOCALHOSTS:
                continue  # published on the engine's loopback: not reachable from here
            return ("127.0.0.1" if host == "localhost" else host), int(binding["HostPort"])
    raise BackendUnavailable(f"container port {port} is not published where this machine "
                             "can reach it")


def _bridge_address(container: Any) -> str | None:
    """The container's own address on its bridge network, when this host routes to it
    (a Linux engine on this host; not rootless or VM engines). Tests then skip the
    userland proxy that serves published loopback ports: a round trip there costs about
    twice as much, and a test makes dozens. Reachable means answered, even refused: the
    server may not listen yet."""
    container.reload()
    networks = container.attrs["NetworkSettings"].get("Networks") or {}
    address = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")),
                   None)
    if not address:
        return None
    try:
        with socket.create_connection((address, 9), timeout=0.2):
            return str(address)
    except ConnectionRefusedError:
        return str(address)
    except OSError:
        return None


def _wait_ready(wrapped: Any, spec: ServerSpec, image: str, url: str,
                ctx: StartContext) -> None:
    timeout = ctx.settings.get("start_timeout")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if spec.ready(url) is not False:
                return
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise RuntimeError(f"container from {image} exited before it was ready "
                               f"(status {wrapped.status}). Last log lines:\n"
                               f"{last_lines(_logs_of(wrapped)())}")
        time.sleep(0.02)  # testcontainers' 1 s default would dominate start-up
    raise TimeoutError(f"{image} was not ready within {timeout:g} s. "
                       f"Last log lines:\n{last_lines(_logs_of(wrapped)())}")


def _logs_of(wrapped: Any) -> Callable[[], str]:
    """The last log lines of a docker-py container, or why they cannot be had."""
    def logs() -> str:
        try:
            return str(wrapped.logs(tail=50).decode(errors="replace"))
        except Exception as exc:
            return f"(logs unavailable: {_short(exc)})"

    return logs


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
