"""A server's data directory initialized once per image, in a docker volume.

A database image initializes its data directory at every container start (PostgreSQL's
``initdb``: about 0.9 s of a 1.4 s start here). A spec that names that directory
(``ServerSpec.data_dir``) gets it initialized once, by a container of the same image and
settings running on a volume, cleanly stopped; later containers copy the volume into
their tmpfs before the image's own entrypoint runs, which then finds the directory made
and starts the server at once. The password the image set at initialization is the
volume's (a label, as a kept container's is): every container seeded from it uses it.

A volume is used only once a second, empty volume (``<name>-done``) says its
initialization finished; one without it (its maker was killed) is made again.
``depfakes down --all`` leaves the volumes; ``docker volume rm`` them by the
``io.depfakes.seed`` label.
"""

from __future__ import annotations

import contextlib
import secrets
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depfakes.backends import ServerSpec, fingerprint

LABEL_SEED = "io.depfakes.seed"          # what initialized it (image id, definition)
LABEL_SEED_SECRET = "io.depfakes.seed.secret"
MOUNT = "/depfakes-seed"


@dataclass(frozen=True)
class Seed:
    volume: str
    secret: str
    # The image's own entrypoint, run after the seed is copied into the data directory.
    entrypoint: list[str]


def seed_for(client: Any, spec: ServerSpec, image: str,
             initialize: Any) -> Seed | None:
    """The initialized volume for ``spec`` on ``image``, made now (``initialize(volume,
    secret)`` runs a server on it until ready) if there is none; None when it cannot be."""
    from filelock import FileLock

    if spec.data_dir is None:
        return None
    found = client.images.get(image)
    key = fingerprint(found.id, spec.data_dir, *spec.definition)
    start = _entrypoint(found, spec.data_dir)
    name = f"depfakes-seed-{spec.dependency}-{key}"
    with FileLock(str(Path(tempfile.gettempdir()) / f"{name}.lock")):
        volume = _volume(client, name)
        if volume is not None and _volume(client, f"{name}-done") is not None:
            return Seed(name, volume.attrs["Labels"][LABEL_SEED_SECRET], start)
        if volume is not None:  # half made (its maker was killed): make it again
            try:
                volume.remove(force=True)
            except Exception:  # in use after all: this start initializes its own
                return None
        secret = secrets.token_urlsafe(18)
        labels = {LABEL_SEED: key}
        client.volumes.create(name, labels={**labels, LABEL_SEED_SECRET: secret})
        try:
            initialize(name, secret)
        except BaseException:
            with contextlib.suppress(Exception):
                client.volumes.get(name).remove(force=True)
            raise
        client.volumes.create(f"{name}-done", labels=labels)
        return Seed(name, secret, start)


def _entrypoint(image: Any, data_dir: str) -> list[str]:
    """The image's own entrypoint, run after the seed is copied into ``data_dir``."""
    config = image.attrs.get("Config") or {}
    original = config.get("Entrypoint") or []
    script = f'cp -a {MOUNT}/. {shlex.quote(data_dir)}/ && exec "$@"'
    return ["sh", "-c", script, "sh", *original]


def _volume(client: Any, name: str) -> Any:
    import docker

    try:
        return client.volumes.get(name)
    except docker.errors.NotFound:
        return None
