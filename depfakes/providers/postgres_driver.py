"""The PostgreSQL driver depfakes itself talks through: psycopg 3 when it is installed,
else psycopg2.

Installing depfakes must not change the driver the code under test uses: Django 4.2+ and
other libraries prefer psycopg 3 whenever it can be imported. A project that tests on
psycopg2 installs ``depfakes[postgres-psycopg2]``, which brings psycopg2 and not psycopg 3,
and depfakes then runs on psycopg2 too (its handles' ``url`` and ``connect()`` included).

``connect()`` gives either driver's connection psycopg 3's shape, as far as depfakes uses
it: ``execute()`` returning a cursor, ``transaction()``, ``info``, ``closed``/``broken``,
and a context manager that closes.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from types import ModuleType
from typing import Any


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked via sys.modules[m] = None
        return False


def name() -> str:
    """The driver's module (and SQLAlchemy dialect driver) name: psycopg or psycopg2."""
    return "psycopg" if installed("psycopg") or not installed("psycopg2") else "psycopg2"


def module() -> ModuleType:
    return importlib.import_module(name())


def __getattr__(attribute: str) -> Any:
    """``sql`` (the driver's module: ``SQL``, ``Identifier``, ``Literal``, the same API in
    both), ``Error`` and ``OperationalError`` (the driver's)."""
    if attribute == "sql":
        return importlib.import_module(f"{name()}.sql")
    if attribute in ("Error", "OperationalError"):
        return getattr(module(), attribute)
    raise AttributeError(attribute)


def conninfo(dsn: str) -> dict[str, Any]:
    """A libpq URL or key=value string, parsed as libpq does."""
    if name() == "psycopg":
        from psycopg.conninfo import conninfo_to_dict

        return dict(conninfo_to_dict(dsn))
    from psycopg2.extensions import parse_dsn  # type: ignore[import-untyped]

    return dict(parse_dsn(dsn))


# A psycopg 3 connection, or a psycopg2 one in its shape (_Psycopg2).
Connection = Any


def connect(dsn: str, **kwargs: Any) -> Connection:
    """A connection (``autocommit=True`` and libpq keywords accepted by both drivers)."""
    if name() == "psycopg":
        import psycopg

        return psycopg.connect(dsn, **kwargs)
    return _Psycopg2(dsn, **kwargs)


def sqlalchemy_scheme(asynchronous: bool = False) -> str:
    """SQLAlchemy's URL scheme for this driver (a bare ``postgresql://`` would make
    SQLAlchemy load psycopg2, whatever is installed)."""
    if name() == "psycopg":
        return "postgresql+psycopg_async" if asynchronous else "postgresql+psycopg"
    return "postgresql+asyncpg" if asynchronous else "postgresql+psycopg2"


class _Psycopg2:
    """A psycopg2 connection in psycopg 3's shape."""

    def __init__(self, dsn: str, autocommit: bool = False, **kwargs: Any) -> None:
        import psycopg2  # type: ignore[import-untyped]

        self.raw = psycopg2.connect(dsn, **kwargs)
        self.raw.autocommit = autocommit
        self.info = self.raw.info

    @property
    def autocommit(self) -> bool:
        return bool(self.raw.autocommit)

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        self.raw.autocommit = value

    @property
    def closed(self) -> bool:
        return bool(self.raw.closed)

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed == 2)  # psycopg2: 2 = lost (not closed by us)

    def execute(self, query: Any, params: Any = None) -> Any:
        if isinstance(query, bytes):
            query = query.decode()
        cursor = self.raw.cursor()
        cursor.execute(query, params)
        return cursor

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        autocommit = self.raw.autocommit
        self.raw.autocommit = False
        try:
            yield
            self.raw.commit()
        except BaseException:
            self.raw.rollback()
            raise
        finally:
            self.raw.autocommit = autocommit

    def commit(self) -> None:
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _Psycopg2:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        # psycopg 3's: commit (or roll back on an error), then close.
        with contextlib.suppress(Exception):
            if not self.raw.closed and not self.raw.autocommit:
                (self.raw.rollback if kind is not None else self.raw.commit)()
        self.raw.close()
