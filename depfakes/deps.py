"""The ``deps`` object a test gets, and how its handles are acquired and released."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from depfakes import registry
from depfakes.errors import DepfakesError, UndeclaredDependency
from depfakes.marker import DepsSpec, check_env_target
from depfakes.providers.base import Provider
from depfakes.runtime import Key, Runtime

if TYPE_CHECKING:
    from depfakes.providers.http import HttpHandle
    from depfakes.providers.mongo import MongoHandle
    from depfakes.providers.postgres import PostgresHandle
    from depfakes.providers.redis import RedisHandle
    from depfakes.providers.s3 import S3Handle


@dataclass
class Acquired:
    key: Key
    provider: Provider
    handle: Any


class Deps:
    """One attribute per dependency the test declared: ``deps.redis``, ``deps.s3``, ..."""

    if TYPE_CHECKING:
        mongo: MongoHandle
        postgres: PostgresHandle
        redis: RedisHandle
        s3: S3Handle
        http: HttpHandle

    def __init__(self, acquired: Sequence[Acquired]) -> None:
        self._acquired = list(acquired)
        self._handles = {entry.key[0]: entry.handle for entry in acquired}

    def _add(self, other: Deps) -> None:
        """Take in the handles of dependencies acquired after this test started."""
        self._acquired += other._acquired
        self._handles.update(other._handles)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        handles = self.__dict__.get("_handles", {})
        if name in handles:
            return handles[name]
        if name in registry.names():
            declared = ", ".join(handles) or "nothing"
            raise UndeclaredDependency(
                f"deps.{name}: this test does not declare '{name}' (it declares {declared}). "
                f"Add @pytest.mark.deps(\"{name}\") to the test, or request the '{name}' fixture."
            )
        raise AttributeError(f"deps has no dependency '{name}'; known dependencies: "
                             f"{', '.join(registry.names())}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._handles})

    def __contains__(self, name: str) -> bool:
        return name in self._handles

    def __repr__(self) -> str:
        return f"<Deps {', '.join(self._handles) or '(none)'}>"


@contextmanager
def open_deps(item: pytest.Item, spec: DepsSpec, runtime: Runtime,
              env_lines: Sequence[str]) -> Iterator[Deps]:
    """Acquire every declared dependency for ``item``, set its env vars, release after."""
    acquired: list[Acquired] = []
    spent: dict[Key, tuple[float, float]] = {}  # (wait for the server, setup)
    monkeypatch = pytest.MonkeyPatch()
    try:
        for name, version in spec.versions.items():
            key = (name, version)
            began = time.perf_counter()
            provider = runtime.provider_for(item, name, version)
            started = time.perf_counter()
            options = runtime.resolve_options(provider, spec.options.get(name, {}))
            acquired.append(Acquired(key, provider, provider.acquire(item, options)))
            spent[key] = (started - began, time.perf_counter() - started)
        deps = Deps(acquired)
        _inject_env(monkeypatch, deps, spec, env_lines)
        yield deps
    finally:
        monkeypatch.undo()
        _release(item.nodeid, acquired, runtime, spent)


def verify(deps: Deps) -> None:
    """Let each provider fail the test for what happened during it (after a passing body)."""
    for entry in deps._acquired:
        entry.provider.verify(entry.handle)


def _release(nodeid: str, acquired: list[Acquired], runtime: Runtime,
             spent: dict[Key, tuple[float, float]]) -> None:
    errors: list[BaseException] = []
    for entry in reversed(acquired):
        began = time.perf_counter()
        try:
            entry.provider.release(entry.handle)
        except Exception as exc:  # release the others before reporting
            errors.append(exc)
        runtime.record(nodeid, entry.key, *spent[entry.key], time.perf_counter() - began)
    if errors:
        raise errors[0]


def env_targets(spec: DepsSpec, env_lines: Sequence[str]) -> dict[str, tuple[str, bool]]:
    """VAR -> ("dependency.attribute", from the marker?) for this test: ini lines for the
    dependencies it declares, then the marker's env= (which wins)."""
    targets: dict[str, tuple[str, bool]] = {}
    for line in env_lines:
        var, _, target = line.partition("=")
        name = target.strip().partition(".")[0]
        if name in spec.versions:
            targets[var.strip()] = (target.strip(), False)
    targets.update({var: (target, True) for var, target in spec.env.items()})
    return targets


# `PG* = postgres`: the libpq variables psycopg, Django, psql and subprocesses read.
LIBPQ_ENV = {"PGHOST": "host", "PGPORT": "port", "PGUSER": "user", "PGPASSWORD": "password",
             "PGDATABASE": "dbname"}


def expand_env_lines(lines: Sequence[str]) -> list[str]:
    """ini ``depfakes_env`` lines, with ``PG* = postgres`` written out as the libpq set."""
    expanded = []
    for line in lines:
        var, sep, target = line.partition("=")
        if sep and var.strip() == "PG*":
            name = target.strip()
            expanded += [f"{libpq} = {name}.{attr}" for libpq, attr in LIBPQ_ENV.items()]
        else:
            expanded.append(line)
    return expanded


def parse_env_lines(lines: Sequence[str], setting: str = "depfakes_env") -> None:
    """Check ini ``depfakes_env`` lines up front so a typo fails the session, not a test."""
    for line in lines:
        var, sep, target = line.partition("=")
        if not sep or not var.strip():
            raise ValueError(f"{setting} line {line!r}: expected 'VAR = dependency.attribute'")
        name = target.strip().partition(".")[0]
        if name not in registry.names():
            raise ValueError(f"{setting} line {line!r}: unknown dependency '{name}'; "
                             f"known: {', '.join(registry.names())}")
        check_env_target(var.strip(), target.strip(), [name])


def env_line_parts(line: str) -> tuple[str, str, str]:
    """``VAR = dependency.attribute`` -> (VAR, dependency, attribute)."""
    var, _, target = line.partition("=")
    name, _, attr = target.strip().partition(".")
    return var.strip(), name, attr


def session_environment(runtime: Runtime, node: Any, lines: Sequence[str]) -> dict[str, str]:
    """``depfakes_session_env``: each variable from its server's handle (started now if
    it is not yet)."""
    values: dict[str, str] = {}
    for line in lines:
        var, name, attr = env_line_parts(line)
        value = getattr(runtime.provider_for(node, name, None).server_handle(), attr)
        if value is not None:
            values[var] = str(value)
    return values


def _inject_env(monkeypatch: pytest.MonkeyPatch, deps: Deps, spec: DepsSpec,
                env_lines: Sequence[str]) -> None:
    for var, (target, explicit) in env_targets(spec, env_lines).items():
        name, _, attr = target.partition(".")
        try:
            value = getattr(getattr(deps, name), attr)
        except DepfakesError:
            if explicit:
                raise
            # A project-wide mapping this test cannot honour (e.g. postgres.url under
            # transaction isolation): unset it, so nothing reaches a real server by it.
            value = None
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(value))
