"""One database URL for the whole session (``depfakes_postgres_stable_url``).

Apps that build their engine at import time (``create_engine(settings.DATABASE_URL)``)
read the URL once, before any test exists. With this setting the URL names one database
per process, ``depfakes_<session>_stable``, for the whole session, and each test still
finds it like the template:

* after a test the database is reset in place (postgres_reset), in the test's teardown
  rather than in the background: the next test uses the same name, so it must wait;
* when only a new clone will do (the test changed the schema, or the role may not reset),
  the used database is renamed away (and dropped later) and a fresh clone from the pool is
  renamed into place;
* the reset ends the app's pooled connections. ``guard_pools`` makes every SQLAlchemy pool
  of the process check, at checkout, a connection made before the last reset (one
  ``SELECT 1``), and replace it when it is gone: the test never sees the dead connection.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from depfakes.backends import SESSION_ID
from depfakes.providers import postgres_driver

if TYPE_CHECKING:
    from depfakes.providers.postgres import ClonePool
    from depfakes.providers.postgres_reset import Recycler


def stable_name() -> str:
    """This process's stable database (an xdist worker has its own session id)."""
    return f"depfakes_{SESSION_ID}_stable"


class StableDatabase:
    """The database behind the stable name: made new after every test."""

    def __init__(self, admin_url: str, name: str, pool: ClonePool, recycler: Recycler) -> None:
        self._admin_url, self.name = admin_url, name
        self._pool, self._recycler = pool, recycler
        _APP_ENGINES.setdefault(name, weakref.WeakSet())
        self._replace()  # in place before any test (or session fixture) connects

    def give_back(self) -> None:
        """The test is over: reset the database in place, or put a fresh clone there."""
        try:
            if not self._recycler.reset_now(self.name):
                self._replace()
        finally:
            _EPOCH.bump()  # the test's connections are gone either way

    def close(self) -> None:
        from depfakes.providers.postgres import drop_database

        self._recycler.forget(self.name)
        with postgres_driver.connect(self._admin_url, autocommit=True) as admin:
            drop_database(admin, self.name)

    def _replace(self) -> None:
        from depfakes.providers.postgres import database_name

        sql = postgres_driver.sql
        self._recycler.forget(self.name)  # its janitor and kept engine: a rename needs none
        fresh = self._pool.take()
        with postgres_driver.connect(self._admin_url, autocommit=True) as admin:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                             (self.name,)).fetchone():
                used, name = database_name(), sql.Identifier(self.name)
                # No one may connect in between: RENAME waits (5 s) for the ended ones.
                admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,))
                admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    name, sql.Identifier(used)))
                self._pool.drop_later(used)
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(fresh), sql.Identifier(self.name)))
        _EPOCH.bump()  # connections to the name so far (the init hook's too) are gone


class _Epoch:
    """Counts the resets of stable databases in this process."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_EPOCH = _Epoch()
# In a pool's connection record: the epoch it was last seen alive, and the epoch in which
# the reset kept it (it survives that reset, and only that one).
_STAMP, _KEPT = "depfakes_epoch", "depfakes_kept"
_guarded = False
# Engines of the app's on each stable database (seen connecting to it), whose idle
# connections the reset keeps as it keeps deps.postgres.engine's.
_APP_ENGINES: dict[str, weakref.WeakSet[Any]] = {}


# Backends of connections to each stable database that the app's pools have checked out
# (a session-scoped Session holding one across tests, say).
_HELD: dict[str, set[int]] = {}
_HELD_KEY = "depfakes_held"

# Of those, what the reset may keep: a transaction that has written nothing (no xid) and
# locks nothing but what reads lock. Its owner goes on using it in the next test.
_HARMLESS = """
SELECT a.pid FROM pg_stat_activity a
WHERE a.pid = ANY (%s) AND a.datname = current_database()
  AND a.state IN ('idle', 'idle in transaction') AND a.backend_xid IS NULL
  AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted AND NOT (
      (l.locktype = 'relation' AND l.mode = 'AccessShareLock') OR l.locktype = 'virtualxid'))
"""


def app_engines(name: str) -> list[Any]:
    return list(_APP_ENGINES.get(name, ()))


def held_harmless(name: str, janitor: postgres_driver.Connection) -> list[int]:
    """The checked-out connections to ``name`` the reset may leave alone (see _HARMLESS)."""
    held = list(_HELD.get(name, ()))
    if not held:
        return []
    return [row[0] for row in janitor.execute(_HARMLESS, (held,)).fetchall()]


def will_survive(info: dict[str, Any]) -> None:
    """The reset about to run keeps this connection (its record's ``info``)."""
    info[_KEPT] = _EPOCH.value


def guard_pools() -> None:
    """Make every SQLAlchemy pool replace, at checkout, a PostgreSQL connection a reset
    ended (SQLAlchemy's own extension point: a checkout listener raising
    DisconnectionError makes the pool reconnect). Class-level listeners reach pools
    made before and after."""
    global _guarded
    if _guarded:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    event.listen(Pool, "connect", _stamp)
    event.listen(Pool, "checkout", _check)
    event.listen(Pool, "checkout", _note_held)
    event.listen(Pool, "checkin", _note_returned)
    event.listen(Engine, "engine_connect", _track)
    _guarded = True


def _track(connection: Any) -> None:
    engine = connection.engine
    if engine.url.database in _APP_ENGINES and engine.dialect.name == "postgresql":
        _APP_ENGINES[engine.url.database].add(engine)


def _stamp(dbapi_connection: Any, record: Any) -> None:
    record.info[_STAMP] = _EPOCH.value


def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    if record.info.get(_STAMP) == _EPOCH.value or not _is_postgres(dbapi_connection):
        return
    if record.info.pop(_KEPT, None) == _EPOCH.value - 1:  # kept by the one reset since
        record.info[_STAMP] = _EPOCH.value
        return
    from sqlalchemy.exc import DisconnectionError

    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        dbapi_connection.rollback()  # the ping's transaction, not the test's
    except Exception as exc:
        raise DisconnectionError(f"depfakes: this connection was ended by the reset of "
                                 f"the test database ({exc})") from exc
    record.info[_STAMP] = _EPOCH.value


def _note_held(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    info = getattr(dbapi_connection, "info", None)  # psycopg 3 and psycopg2's ConnectionInfo
    name = getattr(info, "dbname", None)
    if name in _APP_ENGINES:
        record.info[_HELD_KEY] = (name, info.backend_pid)  # type: ignore[union-attr]
        _HELD.setdefault(name, set()).add(info.backend_pid)  # type: ignore[union-attr]


def _note_returned(dbapi_connection: Any, record: Any) -> None:
    held = record.info.pop(_HELD_KEY, None)
    if held is not None:
        _HELD.get(held[0], set()).discard(held[1])


def _is_postgres(dbapi_connection: Any) -> bool:
    module = type(dbapi_connection).__module__
    return any(name in module for name in ("psycopg", "asyncpg", "pg8000", "postgresql"))
