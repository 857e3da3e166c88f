"""Before conftest.py loads: the stable database URL (``depfakes_postgres_stable_url``).

An app that reads its settings at import (pydantic-settings, a module-level engine) is
imported by conftest.py, which pytest loads before ``pytest_configure``. So, in
``pytest_load_initial_conftests``, the postgres server is started (the server only: the
template needs the init hooks conftest.py defines, and is built later, as usual) and
depfakes_env's postgres variables are set to the stable database's values for the whole
session. Under pytest-xdist the controller starts the server; each worker, whose own
``pytest_load_initial_conftests`` runs before it hears from the controller, finds the
run through an environment variable, adopts the server, and exports its own database.
"""

from __future__ import annotations

import json
import os

import pytest

from depfakes import registry
from depfakes.backends.shared import SharedRun
from depfakes.config import CORE_SETTINGS, SettingError, Settings
from depfakes.deps import env_line_parts, expand_env_lines
from depfakes.marker import EMPTY_SPEC
from depfakes.runtime import Runtime
from depfakes.state import SPEC_KEY

EARLY_KEY = pytest.StashKey[Runtime]()
_SAVED_KEY = pytest.StashKey[dict[str, "str | None"]]()
# The controller's run, for its workers: {"directory", "session", "pid"} (SharedRun).
_RUN_ENV = "_DEPFAKES_XDIST_RUN"
# What the variables say when no server was started (--collect-only, or none can run
# here): a name that never resolves (.invalid), so nothing reaches a real server by it.
_NOWHERE = "postgresql://depfakes@depfakes-not-started.invalid:5432/postgres"


class _EarlyConfig:
    """The config as Settings reads it before pytest has parsed the command line for
    good: the options pytest knows at this point, and the ini file."""

    def __init__(self, config: pytest.Config) -> None:
        self.option = config.known_args_namespace
        self._config = config

    def getini(self, name: str) -> object:
        return self._config.getini(name)


def start(config: pytest.Config) -> None:
    """Start the postgres server and export the stable database's variables, when the
    setting is on (a bad setting is reported by pytest_configure)."""
    settings = Settings(_EarlyConfig(config),  # type: ignore[arg-type]
                        [*CORE_SETTINGS, *registry.all_settings()])
    try:
        if not settings.get("postgres_stable_url"):
            return
        lines = [line for line in expand_env_lines(settings.get("env"))
                 if env_line_parts(line)[1] == "postgres"]
    except SettingError:
        return
    runtime = Runtime(config, settings, _shared_run(config))
    config.stash[EARLY_KEY] = runtime
    from depfakes.providers.postgres import PostgresHandle

    provider = None
    if not config.known_args_namespace.collectonly:
        provider = runtime.start_server_now("postgres")
    handle = (provider.stable_handle() if provider is not None  # type: ignore[attr-defined]
              else PostgresHandle(_NOWHERE, "depfakes_not_started", "database"))
    saved = config.stash.setdefault(_SAVED_KEY, {})
    for line in lines:
        var, _, attr = env_line_parts(line)
        saved.setdefault(var, os.environ.get(var))
        value = getattr(handle, attr)
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = str(value)


def _shared_run(config: pytest.Config) -> SharedRun | None:
    """Under pytest-xdist, the run the workers share: made by the controller (and put in
    the environment its workers inherit), adopted by a worker the controller started."""
    try:
        data = json.loads(os.environ.get(_RUN_ENV) or "null")
    except ValueError:
        data = None
    # A worker of that controller only: a pytest that a test runs inherits both variables.
    if os.environ.get("PYTEST_XDIST_WORKER") and isinstance(data, dict) and \
            data.get("pid") == os.getppid():
        return SharedRun.from_workerinput(data)
    if getattr(config.known_args_namespace, "numprocesses", None):
        shared = SharedRun.create()
        config.stash.setdefault(_SAVED_KEY, {}).setdefault(_RUN_ENV, os.environ.get(_RUN_ENV))
        os.environ[_RUN_ENV] = json.dumps(shared.to_workerinput())
        return shared
    return None


def wait_for_database(session: pytest.Session) -> None:
    """Before any session fixture: a project's own session- and module-scoped fixtures
    (a TestClient whose startup queries, users made once) use the stable database before
    any test asks for it, so it must exist by then."""
    runtime = session.config.stash.get(EARLY_KEY, None)
    if runtime is not None and any(
            item.stash.get(SPEC_KEY, EMPTY_SPEC).versions.get("postgres", "") is None
            for item in session.items):
        runtime.wait_quietly("postgres")


def restore(config: pytest.Config) -> None:
    """Put back the variables as they were (pytest run in-process, by pytester say)."""
    for var, value in config.stash.get(_SAVED_KEY, {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
