"""One server per dependency for a whole pytest-xdist run, shared by its workers.

The controller makes a directory and hands it to every worker with its own session id
and pid, which then label everything the workers start (so a server outlives the worker
that started it, and is swept like any other orphan if the controller is killed).
Starting a dependency, a worker holds that dependency's file lock: the first one starts
the server (and builds what it shares, such as a template database) and writes a record;
the others adopt the server from the record without talking to Docker at all. Workers
never stop a shared server: the controller does, once every worker has finished.

The directory lives in the system temp dir rather than pytest's basetemp, which pytest
creates mode 0700: a local server running as an unprivileged user could not reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from depfakes.backends import OWNER, Server, make_session_dir, registered

WORKERINPUT_KEY = "depfakes_shared"


@dataclass(frozen=True)
class SharedRun:
    directory: Path
    session: str
    pid: int

    @classmethod
    def create(cls) -> SharedRun:
        """The controller's side: a fresh directory, owned by this process's session."""
        return cls(make_session_dir("depfakes-xdist-"), OWNER.session, OWNER.pid)

    def to_workerinput(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "session": self.session, "pid": self.pid}

    @classmethod
    def from_workerinput(cls, data: dict[str, Any]) -> SharedRun:
        """The worker's side: adopt the controller as owner of what this process starts."""
        shared = cls(Path(data["directory"]), data["session"], int(data["pid"]))
        OWNER.session, OWNER.pid = shared.session, shared.pid
        return shared

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Held while a worker starts ``name``, so the others wait and then adopt it."""
        from filelock import FileLock

        with FileLock(str(self.directory / f"{_safe(name)}.lock")):
            yield

    def server(self, name: str, start: Callable[[], Server]) -> Server:
        """The run's server for ``name``: adopted from its record, or started and recorded.
        Call it holding ``lock(name)``."""
        path = self.directory / f"{_safe(name)}.json"
        if path.exists():
            data = json.loads(path.read_text())
            return Server(data["backend"], data["host"], data["port"], data["url"],
                          f"{data['description']}, shared by the xdist workers",
                          record=data["record"], shared=True)
        server = start()
        # 0600: the record holds the server's URL with its password.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(json.dumps({"backend": server.backend, "host": server.host,
                                    "port": server.port, "url": server.url,
                                    "description": server.description,
                                    "record": server.record}))
        return replace(server, stop=lambda: None, shared=True)

    def stop_all(self) -> None:
        """The controller's side, after the workers: stop every shared server, remove files."""
        for path in sorted(self.directory.glob("*.json")):
            data = json.loads(path.read_text())
            try:
                if data["record"]:
                    registered()[data["backend"]].stop_recorded(data["record"])
            except Exception as exc:  # one server's failure must not leak the others
                warnings.warn(f"depfakes: stopping shared server {path.stem} failed: {exc!r}",
                              stacklevel=1)
        shutil.rmtree(self.directory, ignore_errors=True)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
