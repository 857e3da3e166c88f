"""Which dependencies exist: the built-ins, entry point group ``depfakes.providers``,
and whatever ``depfakes.register()`` added (e.g. from a conftest).

Built-ins are referenced by import path and loaded on first use, so importing depfakes
never imports fakeredis, moto or testcontainers.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from depfakes.config import Setting
    from depfakes.providers.base import Provider

ENTRY_POINT_GROUP = "depfakes.providers"

_BUILTINS: dict[str, str] = {
    "mongo": "depfakes.providers.mongo:MongoProvider",
    "postgres": "depfakes.providers.postgres:PostgresProvider",
    "redis": "depfakes.providers.redis:RedisProvider",
    "s3": "depfakes.providers.s3:S3Provider",
    "http": "depfakes.providers.http:HttpProvider",
}

_registered: dict[str, type[Provider]] = {}
_entry_points_loaded = False


def register(provider: type[Provider], *, replace: bool = False) -> type[Provider]:
    """Make ``provider`` available to ``@pytest.mark.deps(provider.name)``.

    Usable as a class decorator. Registering a second provider under a taken name is an
    error unless ``replace=True`` (which is how a project swaps a built-in for its own).
    """
    name = getattr(provider, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"provider {provider!r} needs a 'name' that is a Python identifier")
    if not replace and name in names() and get(name) is not provider:
        raise ValueError(
            f"a provider named '{name}' is already registered; pass replace=True to override it"
        )
    _registered[name] = provider
    return provider


def names() -> list[str]:
    _load_entry_points()
    return sorted({*_BUILTINS, *_registered})


def get(name: str) -> type[Provider]:
    _load_entry_points()
    if name not in _registered:
        if name not in _BUILTINS:
            raise KeyError(name)
        module_name, _, attr = _BUILTINS[name].partition(":")
        _registered[name] = getattr(importlib.import_module(module_name), attr)
    return _registered[name]


def all_settings() -> list[Setting]:
    """Every provider's settings, and those the backends add for server-backed ones."""
    from depfakes.backends import LAYER_SETTINGS, backend_settings

    settings: list[Setting] = list(LAYER_SETTINGS)
    for name in names():
        provider = get(name)
        settings.extend(provider.settings)
        if provider.server_info is not None:
            settings.extend(backend_settings(name, provider.server_info))
    return settings


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        provider = entry_point.load()
        _registered.setdefault(getattr(provider, "name", entry_point.name), provider)
