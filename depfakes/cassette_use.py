"""Which recorded interactions a pytest run replayed, for
``depfakes cassettes check --unused``: cassettes no test used, and interactions in used
cassettes that no test replayed.

Each pytest process (each xdist worker) writes what it read and replayed into pytest's
cache directory when its session ends (``.pytest_cache/d/depfakes-cassettes/use/``); the
run's first process clears what an earlier run left there, and notes how it was started,
so a report says which run it describes (a run of a few tests leaves most cassettes
unused).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DIRECTORY = "depfakes-cassettes"  # under pytest's cache: .pytest_cache/d/<this>/use
_RUN = "run.info"


def use_directory(config: pytest.Config) -> Path | None:
    cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
    return cache.mkdir(DIRECTORY) / "use" if cache is not None else None


def start_run(config: pytest.Config) -> None:
    """The run's first process: forget the previous run, note this one."""
    directory = use_directory(config)
    if directory is None or hasattr(config, "workerinput") or config.option.collectonly:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.json"):
        stale.unlink(missing_ok=True)
    info = {"started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "args": list(config.invocation_params.args)}
    (directory / _RUN).write_text(json.dumps(info))


def save(config: pytest.Config, interactions: Mapping[str, int],
         played: Mapping[str, set[int]]) -> None:
    """This process's part: every cassette file read (path -> interactions in it) and the
    indexes of those its tests replayed."""
    directory = use_directory(config)
    if directory is None or not interactions:
        return
    directory.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    data = {"interactions": dict(interactions),
            "played": {path: sorted(indexes) for path, indexes in played.items()}}
    (directory / f"{worker}.json").write_text(json.dumps(data))


@dataclass
class RunUse:
    """What the last run read and replayed, merged over its processes."""

    info: dict[str, Any]
    interactions: dict[str, int] = field(default_factory=dict)
    played: dict[str, set[int]] = field(default_factory=dict)

    def used(self, path: Path) -> bool:
        return _key(path) in self.interactions

    def unplayed(self, path: Path) -> list[int]:
        """Indexes of the cassette's interactions no test replayed."""
        key = _key(path)
        return [i for i in range(self.interactions.get(key, 0))
                if i not in self.played.get(key, set())]


def load(cache_dir: Path) -> RunUse | None:
    """The last run's use, from a project's pytest cache directory (None: no run noted)."""
    directory = cache_dir / "d" / DIRECTORY / "use"
    try:
        use = RunUse(json.loads((directory / _RUN).read_text()))
    except (OSError, ValueError):
        return None
    for part in sorted(directory.glob("*.json")):
        with part.open() as fh:
            data = json.load(fh)
        for path, count in data["interactions"].items():
            use.interactions[_key(Path(path))] = count
        for path, indexes in data["played"].items():
            use.played.setdefault(_key(Path(path)), set()).update(indexes)
    return use


def _key(path: Path) -> str:
    return str(path.resolve())
