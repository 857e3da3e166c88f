"""depfakes: one pytest marker for the services a test needs.

    @pytest.mark.deps("redis", "s3", "http")
    def test_upload(deps): ...

Public API: ``Deps``, the handle types, ``Provider``/``Option`` for third-party providers,
and ``register()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from depfakes.deps import Deps
from depfakes.errors import DepfakesError, MarkerError, MissingExtra, UndeclaredDependency
from depfakes.providers.base import Option, Provider, StartContext, Unavailable
from depfakes.registry import register

__version__ = "0.1.0"

# `pytest_plugins = ["depfakes"]` in a root conftest registers this package; this line
# then loads the hooks (when the pytest11 entry point already did, pytest skips it).
pytest_plugins = ["depfakes.plugin"]

if TYPE_CHECKING:
    from depfakes.providers.http import HttpHandle
    from depfakes.providers.mongo import MongoHandle
    from depfakes.providers.postgres import PostgresHandle
    from depfakes.providers.redis import RedisHandle
    from depfakes.providers.s3 import S3Handle

_HANDLES = {
    "MongoHandle": "depfakes.providers.mongo",
    "PostgresHandle": "depfakes.providers.postgres",
    "RedisHandle": "depfakes.providers.redis",
    "S3Handle": "depfakes.providers.s3",
    "HttpHandle": "depfakes.providers.http",
}


def __getattr__(name: str) -> Any:
    # Handle types load on first use, so `import depfakes` works without any extra.
    if name in _HANDLES:
        import importlib

        return getattr(importlib.import_module(_HANDLES[name]), name)
    raise AttributeError(f"module 'depfakes' has no attribute {name!r}")


__all__ = [
    "DepfakesError",
    "Deps",
    "HttpHandle",
    "MarkerError",
    "MissingExtra",
    "MongoHandle",
    "Option",
    "PostgresHandle",
    "Provider",
    "RedisHandle",
    "S3Handle",
    "StartContext",
    "Unavailable",
    "UndeclaredDependency",
    "__version__",
    "register",
]
