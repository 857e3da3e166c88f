"""Read the ``deps`` markers of a test into one ``DepsSpec``: parse, merge, validate.

Markers on the module, class and function merge into their union. Where several name
the same dependency, the closest explicit version pin wins, and the closest value wins
for each option; conflicting pins or options at the same level are an error.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from depfakes import registry
from depfakes.errors import MarkerError

MARKER = "deps"
# Options every test takes, whatever it declares.
CORE_OPTIONS = ("env",)


@dataclass(frozen=True)
class DepsSpec:
    """What one test declared: dependencies (name -> version pin) and their options."""

    versions: dict[str, str | None] = field(default_factory=dict)
    # Provider name -> the marker options that provider accepts (validated).
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ENV_VAR -> "dependency.attribute", from the marker's env= option.
    env: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.versions)


EMPTY_SPEC = DepsSpec()


def parse_name(text: Any) -> tuple[str, str | None]:
    if not isinstance(text, str) or not text.strip():
        raise MarkerError(
            f"deps() takes dependency names as strings, e.g. deps(\"postgres\"), got {text!r}"
        )
    name, _, version = text.strip().partition(":")
    return name.strip(), (version.strip() or None)


def spec_for(item: pytest.Item, requested: Iterable[str] = ()) -> DepsSpec:
    """Build the test's spec from its markers plus the dependency fixtures it requests."""
    versions: dict[str, str | None] = {}
    kwargs: dict[str, Any] = {}
    for level in _marker_levels(item):  # closest first
        level_versions, level_kwargs = _merge_level(level)
        for name, version in level_versions.items():
            if versions.get(name) is None:
                versions[name] = version
        for key, value in level_kwargs.items():
            kwargs.setdefault(key, value)
    for name in requested:
        versions.setdefault(name, None)
    return _validate(versions, kwargs)


def _marker_levels(item: pytest.Item) -> list[list[pytest.Mark]]:
    levels: dict[int, list[pytest.Mark]] = {}
    order: list[int] = []
    for node, mark in item.iter_markers_with_node(MARKER):
        if id(node) not in levels:
            levels[id(node)] = []
            order.append(id(node))
        levels[id(node)].append(mark)
    return [levels[key] for key in order]


def _merge_level(marks: list[pytest.Mark]) -> tuple[dict[str, str | None], dict[str, Any]]:
    """Merge the markers of one node (a test may carry several deps markers)."""
    versions: dict[str, str | None] = {}
    kwargs: dict[str, Any] = {}
    for mark in marks:
        for arg in mark.args:
            name, version = parse_name(arg)
            known = versions.get(name)
            if known is not None and version is not None and known != version:
                raise MarkerError(
                    f"'{name}' is pinned to both '{known}' and '{version}' on the same level; "
                    "keep one pin"
                )
            versions[name] = version if version is not None else known
        for key, value in mark.kwargs.items():
            if key in kwargs and kwargs[key] != value:
                raise MarkerError(
                    f"option {key}= is given twice on the same level ({kwargs[key]!r} and "
                    f"{value!r}); keep one"
                )
            kwargs[key] = value
    return versions, kwargs


def _validate(versions: dict[str, str | None], kwargs: Mapping[str, Any]) -> DepsSpec:
    known = registry.names()
    for name, version in versions.items():
        if name not in known:
            raise MarkerError(f"unknown dependency '{name}'{_suggest(name, known)}. "
                              f"Known dependencies: {', '.join(known)}")
        if version is not None:
            try:
                registry.get(name).check_version(version)
            except ValueError as exc:
                raise MarkerError(str(exc)) from None
    options: dict[str, dict[str, Any]] = {name: {} for name in versions}
    for key, value in kwargs.items():
        if key in CORE_OPTIONS:
            continue
        owners = [name for name in versions if key in registry.get(name).options]
        if not owners:
            raise MarkerError(_unknown_option(key, versions))
        for owner in owners:
            try:
                registry.get(owner).options[key].check(key, value)
            except ValueError as exc:
                raise MarkerError(f"{owner}: {exc}") from None
            options[owner][key] = value
    env = _check_env(kwargs.get("env", {}), versions)
    return DepsSpec(versions=versions, options=options, env=env)


def _unknown_option(key: str, declared: Mapping[str, Any]) -> str:
    valid = sorted({*CORE_OPTIONS, *(opt for name in declared
                                     for opt in registry.get(name).options)})
    for name in registry.names():
        if key in registry.get(name).options:
            return (f"option {key}= belongs to '{name}', which this test does not declare; "
                    f"add \"{name}\" to the deps marker")
    return (f"unknown option {key}={_suggest(key, valid)}. "
            f"Valid options for {', '.join(declared) or 'no dependency'}: {', '.join(valid)}")


def _check_env(env: Any, declared: Mapping[str, Any]) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise MarkerError(
            f"env= takes a dict like {{'REDIS_URL': 'redis.url'}}, got {type(env).__name__}"
        )
    checked: dict[str, str] = {}
    for var, target in env.items():
        check_env_target(str(var), target, declared)
        checked[str(var)] = target
    return checked


def check_env_target(var: str, target: Any, declared: Iterable[str]) -> tuple[str, str]:
    """Validate one ``VAR -> "dependency.attribute"`` mapping; return (dependency, attr)."""
    name, _, attr = str(target).partition(".")
    if not isinstance(target, str) or not attr:
        raise MarkerError(f"env {var}: expected 'dependency.attribute' (e.g. 'redis.url'), "
                          f"got {target!r}")
    if name not in declared:
        raise MarkerError(f"env {var}={target!r}: '{name}' is not declared by this test; "
                          f"add \"{name}\" to the deps marker")
    handle_type = registry.get(name).handle_type
    attrs = handle_attributes(handle_type)
    if attr not in attrs:
        raise MarkerError(f"env {var}={target!r}: {handle_type.__name__} has no attribute "
                          f"'{attr}'{_suggest(attr, attrs)}. Attributes: {', '.join(attrs)}")
    return name, attr


def handle_attributes(handle_type: type) -> list[str]:
    """Public attributes a handle declares: class attributes, properties, annotations."""
    names = {a for a in dir(handle_type) if not a.startswith("_")}
    for klass in handle_type.__mro__:
        names.update(a for a in getattr(klass, "__annotations__", {}) if not a.startswith("_"))
    return sorted(names)


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_declare_lines(lines: Iterable[str], rootpath: Path) -> list[tuple[Path, list[str]]]:
    """ini ``depfakes_declare``: ``PATH = name, name`` per line, PATH (a directory or a
    file) relative to the rootdir. Checked up front: a typo fails the session."""
    parsed = []
    for line in lines:
        path_text, sep, names_text = line.partition("=")
        names = [name.strip() for name in names_text.split(",") if name.strip()]
        if not sep or not path_text.strip() or not names:
            raise MarkerError(f"depfakes_declare line {line!r}: expected 'PATH = dependency, "
                              "...' (e.g. 'tests/api = postgres, redis')")
        path = Path(os.path.normpath(rootpath / path_text.strip()))
        if not path.exists():
            raise MarkerError(f"depfakes_declare line {line!r}: {path} does not exist "
                              f"(paths are relative to the rootdir, {rootpath})")
        try:
            _validate(dict.fromkeys(names), {})
        except MarkerError as exc:
            raise MarkerError(f"depfakes_declare line {line!r}: {exc}") from None
        parsed.append((path, names))
    return parsed


def declared_under(item_path: Path, declared: list[tuple[Path, list[str]]]) -> list[str]:
    """The dependencies ``depfakes_declare`` gives a test at ``item_path``."""
    return [name for path, names in declared
            if item_path == path or path in item_path.parents for name in names]
