"""The ``secantus`` backend: MongoDB tests on machines without Docker or mongod.

SecantusDB (``pip install secantusdb``, GPL-2.0) is a MongoDB-wire server with
WiredTiger inside its wheel: pymongo's CRUD, aggregation, indexes and transactions work;
``$text``, server-side JavaScript, hashed and wildcard indexes and replica sets do not.
depfakes starts it as a separate process (it never imports it) on a free loopback port,
its data under depfakes' own directory, and stops, sweeps and keeps it like every local
server. Opt-in only (``--deps-backend mongo=secantus``): ``auto`` never prefers it to a
real mongod.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from depfakes.backends import BackendUnavailable, LocalLaunch, LocalRecipe, ServerSpec
from depfakes.backends.local import LocalBackend

if TYPE_CHECKING:
    from depfakes.config import Settings
    from depfakes.providers.base import Provider

FIDELITY = ("MongoDB-wire compatible, not mongod: no $text, server-side JavaScript, hashed or "
            "wildcard indexes, or replica sets; GPL-2.0, installed by you (pip install "
            "secantusdb)")


class SecantusBackend(LocalBackend):
    name = "secantus"
    auto = False
    summary = "SecantusDB, a MongoDB-wire server from PyPI"

    @classmethod
    def serves(cls, provider: type[Provider]) -> bool:
        return provider.name == "mongo"

    @classmethod
    def diagnose(cls, provider: type[Provider], settings: Settings) -> tuple[bool, str]:
        try:
            return True, f"{Secantus().identity} ({FIDELITY})"
        except BackendUnavailable as exc:
            return False, str(exc)

    def recipe(self, spec: ServerSpec) -> LocalRecipe:
        return Secantus()


class Secantus(LocalRecipe):
    """secantusd-py from the environment pytest runs in (or PATH)."""

    unprivileged = False  # a Python program: the unprivileged user may not reach the venv

    def __init__(self) -> None:
        beside = Path(sys.executable).parent / "secantusd-py"
        found = beside if beside.is_file() else shutil.which("secantusd-py")
        if found is None:
            raise BackendUnavailable("secantusd-py is not installed; pip install secantusdb "
                                     "(GPL-2.0: depfakes runs it as a separate process)")
        self.binary = Path(found)
        self.identity = f"{self.binary}"

    def prepare(self, workdir: Path, port: int, user: Any) -> LocalLaunch:
        # An empty config of our own: no ./secantusd.toml or ~/.secantus one is read.
        config = workdir / "secantusd.toml"
        config.write_text("")
        command = [str(self.binary), "--config", str(config), "--host", "127.0.0.1",
                   "--port", str(port), "--storage-path", str(workdir / "data"),
                   "--log-level", "WARNING"]
        return LocalLaunch(command, f"mongodb://127.0.0.1:{port}/",
                           f"secantus {self.binary.name} (port {port})")
