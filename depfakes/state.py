"""Where hooks and fixtures keep their shared state (pytest stash keys)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from depfakes.backends.shared import SharedRun
    from depfakes.deps import Deps
    from depfakes.marker import DepsSpec
    from depfakes.runtime import Runtime


@dataclass
class SessionState:
    runtime: Runtime
    env_lines: list[str] = field(default_factory=list)
    session_env_lines: list[str] = field(default_factory=list)
    # On a pytest-xdist controller: the servers its workers share, stopped at its end.
    shared_run: SharedRun | None = None
    # depfakes_declare: (path, dependencies every test under it declares).
    declared_paths: list[tuple[Path, list[str]]] = field(default_factory=list)
    # What providers run alongside the tests (Provider.look_ahead), ended at unconfigure.
    alongside: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


STATE_KEY = pytest.StashKey[SessionState]()
SPEC_KEY: pytest.StashKey[DepsSpec] = pytest.StashKey()
DEPS_KEY: pytest.StashKey[Deps] = pytest.StashKey()
# The test pytest runs after this one (None: the last), for database scopes wider than a test.
NEXT_ITEM_KEY: pytest.StashKey[pytest.Item | None] = pytest.StashKey()


def session_state(config: pytest.Config) -> SessionState:
    try:
        return config.stash[STATE_KEY]
    except KeyError:
        raise RuntimeError(
            "depfakes fixtures are in use but the depfakes plugin is not loaded; add "
            "pytest_plugins = [\"depfakes\"] to your root conftest.py"
        ) from None
