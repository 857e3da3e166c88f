"""Making a used test database like new again, in place, instead of dropping it and
cloning another from the template.

A clone costs ``CREATE DATABASE`` (two checkpoints with FILE_COPY) and ``DROP DATABASE``,
tens of milliseconds of server time per test, which the tests' own queries then wait
behind. Most tests only write rows, so the template is prepared once to say what a test
wrote:

* every table gets a statement-level trigger (``ENABLE ALWAYS``: it fires under
  ``session_replication_role = replica`` too) that notes the table in ``_depfakes.dirty``,
  in the writer's transaction: a rolled-back write leaves no note, and nothing is shared
  between writers, so no test waits on another's lock because of it;
* an event trigger notes any DDL (temporary objects aside): a test that changed the schema
  gets a new clone;
* the rows the init hook left (seed rows) are copied into ``_depfakes.seed_<oid>``, the
  sequences' values into ``_depfakes.sequences``.

After the test, ``reset`` runs ``_depfakes.reset()``, which ends every client connection
to the database (and waits until they are gone, so no commit can land behind it) but
the idle ones depfakes keeps for the next test (their session state discarded first);
it empties the noted tables, puts their seed rows back (with triggers and foreign keys
off, like a restore) and rewinds sequences that moved; or it answers ``schema`` when only
a new clone will do. Everything lives in the ``_depfakes``
schema of the test database; the app's own schema is untouched but for the triggers.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from depfakes.backends import with_database

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy

    from depfakes.providers.postgres import ClonePool

SCHEMA = "_depfakes"
# Part of the template's fingerprint: templates prepared differently are not reused.
VERSION = "reset-2"

_OBJECTS = r"""
CREATE SCHEMA _depfakes;
CREATE TABLE _depfakes.dirty (relid oid NOT NULL);
CREATE INDEX ON _depfakes.dirty (relid);
CREATE TABLE _depfakes.tables (relid oid PRIMARY KEY, wipe text NOT NULL, restore text);
CREATE TABLE _depfakes.sequences (schemaname name, sequencename name, last_value bigint,
                                  start_value bigint NOT NULL,
                                  PRIMARY KEY (schemaname, sequencename));
CREATE TABLE _depfakes.state (large_objects bigint NOT NULL);

-- SECURITY DEFINER: a role the test created may write to the app's tables but not here.
CREATE FUNCTION _depfakes.mark() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO _depfakes.dirty SELECT TG_RELID
  WHERE NOT EXISTS (SELECT 1 FROM _depfakes.dirty WHERE relid = TG_RELID);
  RETURN NULL;
END $$;

-- relid 0: the schema changed. DROP reports no commands, so it counts too.
CREATE FUNCTION _depfakes.mark_ddl() RETURNS event_trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands())
     OR EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                WHERE schema_name IS NULL OR schema_name NOT LIKE 'pg\_temp%') THEN
    INSERT INTO _depfakes.dirty VALUES (0);
  END IF;
END $$;

-- keep: backends of idle connections whose session state the caller discarded.
CREATE FUNCTION _depfakes.reset(keep int[]) RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
DECLARE
  r record;
BEGIN
  -- End the test's connections and wait until they are gone (from 14 on; before, the
  -- caller does it): a backend still exiting could commit after the notes were read.
  IF current_setting('server_version_num')::int >= 140000 THEN
    EXECUTE 'SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
             AND backend_type = ''client backend'' AND pid <> ALL ($1)' USING keep;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database()) THEN
    RETURN 'prepared';  -- ROLLBACK PREPARED cannot run in a function
  END IF;
  IF EXISTS (SELECT 1 FROM _depfakes.dirty WHERE relid = 0)
     OR (SELECT count(*) FROM pg_largeobject_metadata)
        <> (SELECT large_objects FROM _depfakes.state)
     OR EXISTS (SELECT 1 FROM _depfakes.dirty d WHERE NOT EXISTS (
          SELECT 1 FROM _depfakes.tables t
          WHERE t.relid = coalesce(pg_partition_root(d.relid), d.relid))) THEN
    RETURN 'schema';
  END IF;
  SET LOCAL session_replication_role = replica;  -- no triggers, no foreign key checks
  FOR r IN SELECT t.wipe, t.restore FROM _depfakes.tables t WHERE t.relid IN (
             SELECT coalesce(pg_partition_root(d.relid), d.relid) FROM _depfakes.dirty d) LOOP
    EXECUTE r.wipe;
    IF r.restore IS NOT NULL THEN
      EXECUTE r.restore;
    END IF;
  END LOOP;
  FOR r IN SELECT s.schemaname, s.sequencename, s.last_value, s.start_value
           FROM _depfakes.sequences s JOIN pg_sequences p USING (schemaname, sequencename)
           WHERE p.last_value IS DISTINCT FROM s.last_value LOOP
    PERFORM setval(format('%I.%I', r.schemaname, r.sequencename),
                   coalesce(r.last_value, r.start_value), r.last_value IS NOT NULL);
  END LOOP;
  DELETE FROM _depfakes.dirty;
  RETURN 'clean';
END $$;
"""

# The app's tables: ordinary and partitioned, outside the system's schemas and ours.
_TABLES = r"""
SELECT c.oid, c.relkind, c.relispartition, format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL (ARRAY['pg_catalog',
      'information_schema', '_depfakes']) AND n.nspname NOT LIKE 'pg\_toast%'
      AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY c.oid
"""

# Columns a restore can write: not dropped, not generated.
_COLUMNS = """
SELECT coalesce(string_agg(quote_ident(attname), ', ' ORDER BY attnum), '')
FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped
      AND attgenerated = ''
"""


def can_reset(connection: psycopg.Connection[Any]) -> bool:
    """Triggers that see every role's writes, event triggers and replica mode need a
    superuser; on a server where depfakes' role is not one, tests get clones."""
    row = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                             ).fetchone()
    return bool(row and row[0])


def prepare_template(connection: psycopg.Connection[Any]) -> None:
    """Install the notes, triggers and seed copies in the template (after the init hooks,
    before it is marked as a template); one transaction."""
    with connection.transaction():
        connection.execute(_OBJECTS)
        tables = connection.execute(_TABLES).fetchall()
        for oid, relkind, is_partition, name in tables:
            connection.execute(
                f"CREATE TRIGGER _depfakes_mark AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {name} FOR EACH STATEMENT EXECUTE FUNCTION _depfakes.mark()")
            connection.execute(f"ALTER TABLE {name} ENABLE ALWAYS TRIGGER _depfakes_mark")
            if not is_partition:  # a partition's rows are wiped and restored by its root
                _plan(connection, oid, name, only="" if relkind == "p" else "ONLY ")
        connection.execute(
            "INSERT INTO _depfakes.sequences SELECT schemaname, sequencename, last_value, "
            "start_value FROM pg_sequences WHERE schemaname <> '_depfakes'")
        connection.execute("INSERT INTO _depfakes.state SELECT count(*) "
                           "FROM pg_largeobject_metadata")
        connection.execute("CREATE EVENT TRIGGER _depfakes_ddl ON ddl_command_end "
                           "EXECUTE FUNCTION _depfakes.mark_ddl()")
        connection.execute("ALTER EVENT TRIGGER _depfakes_ddl ENABLE ALWAYS")


def _plan(connection: psycopg.Connection[Any], oid: int, name: str, only: str) -> None:
    """How to empty one table and put its seed rows back."""
    restore = None
    has_rows = connection.execute(f"SELECT EXISTS (SELECT 1 FROM {only}{name})").fetchone()
    if has_rows and has_rows[0]:
        columns = connection.execute(_COLUMNS, (oid,)).fetchone()[0]  # type: ignore[index]
        seed = f"_depfakes.seed_{oid}"
        connection.execute(f"CREATE TABLE {seed} AS SELECT {columns} FROM {only}{name}")
        restore = (f"INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE "
                   f"SELECT {columns} FROM {seed}")
    connection.execute("INSERT INTO _depfakes.tables VALUES (%s, %s, %s)",
                       (oid, f"DELETE FROM {only}{name}", restore))


def reset(connection: psycopg.Connection[Any], keep: Sequence[int] = ()) -> bool:
    """Make the database ``connection`` (autocommit, superuser) is on like the template
    again, ending every other client connection but the idle ones in ``keep`` (backend
    pids whose session state the caller discarded, see SESSION_CLEANUP). False: the test
    changed what only a new clone undoes (the schema, large objects), or the database
    cannot be reset; the caller replaces it. One round trip, as a rule."""
    import psycopg

    try:
        if connection.info.server_version < 140000:
            _end_other_connections(connection, keep)
        outcome = _call_reset(connection, keep)
        if outcome == "prepared":  # a test left a prepared transaction (two-phase commit)
            for (gid,) in connection.execute("SELECT gid FROM pg_prepared_xacts "
                                             "WHERE database = current_database()"):
                connection.execute(f"ROLLBACK PREPARED {_literal(connection, gid)}")
            outcome = _call_reset(connection, keep)
    except psycopg.Error:  # e.g. the test dropped _depfakes, or the database itself
        return False
    return outcome == "clean"


def _call_reset(connection: psycopg.Connection[Any], keep: Sequence[int]) -> str:
    row = connection.execute("SELECT _depfakes.reset(%s::int[])", (list(keep),)).fetchone()
    return str(row[0]) if row else ""


def _end_other_connections(connection: psycopg.Connection[Any], keep: Sequence[int]) -> None:
    """Before PostgreSQL 14 (no pg_terminate_backend timeout): terminate, then poll."""
    others = ("FROM pg_stat_activity WHERE datname = current_database() "
              "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
              "AND pid <> ALL (%s::int[])")
    connection.execute(f"SELECT pg_terminate_backend(pid) {others}", (list(keep),))
    for _ in range(1000):
        connection.execute("SELECT pg_stat_clear_snapshot()")
        if not connection.execute(f"SELECT EXISTS (SELECT 1 {others})",  # type: ignore[index]
                                  (list(keep),)).fetchone()[0]:
            return
        with contextlib.suppress(Exception):
            connection.execute("SELECT pg_sleep(0.005)")


# What DISCARD ALL does, but for the prepared statements of drivers (psycopg's, made by
# the protocol): they hold no state, and keeping them spares the next test re-planning.
# Those made by SQL PREPARE go. One round trip on a kept connection (autocommit).
SESSION_CLEANUP = """
SET SESSION AUTHORIZATION DEFAULT; RESET ALL; CLOSE ALL; UNLISTEN *;
SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES;
DO $$ DECLARE s text; BEGIN
  FOR s IN SELECT name FROM pg_prepared_statements WHERE from_sql LOOP
    EXECUTE format('DEALLOCATE %I', s);
  END LOOP;
END $$
"""


def _literal(connection: psycopg.Connection[Any], value: str) -> str:
    from psycopg import sql

    return sql.Literal(value).as_string(connection)


class Recycler:
    """The test databases of one provider. A used one is reset in place by a background
    thread while the next test runs on another, then handed out again; one that cannot
    be (the test changed the schema) is dropped by the clone pool, which also makes the
    databases this needs beyond those in rotation (two, when tests run one at a time)."""

    def __init__(self, admin_url: str, pool: ClonePool, resets: bool) -> None:
        self._admin_url, self._pool, self._resets = admin_url, pool, resets
        self._clean: list[str] = []
        self._dirty: deque[str] = deque()
        self._resetting = 0
        self._closing = False
        # One connection per database, kept open: the reset runs on it.
        self._janitors: dict[str, psycopg.Connection[Any]] = {}
        # deps.postgres.engine, per database: its idle connections survive the reset
        # (with their session state discarded), so the next test neither connects nor
        # initializes a dialect.
        self._engines: dict[str, sqlalchemy.Engine] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if resets:
            self._thread = threading.Thread(target=self._work, name="depfakes-pg-reset",
                                            daemon=True)
            self._thread.start()

    def engine(self, name: str) -> sqlalchemy.Engine:
        engine = self._engines.get(name)
        if engine is None:
            import sqlalchemy

            engine = self._engines[name] = sqlalchemy.create_engine(
                with_database(self._admin_url, name, "postgresql+psycopg"))
        return engine

    def take(self) -> str:
        with self._cond:
            # A reset takes milliseconds, a clone tens: wait for one, unless this is the
            # first time two databases are needed at once.
            while not self._clean and (self._dirty or self._resetting) and self._rotating:
                self._cond.wait()
            if self._clean:
                return self._clean.pop()
            if self._dirty or self._resetting:
                self._rotating = True
        return self._pool.take()

    _rotating = False  # two databases in use or being reset: no more clones needed

    def give_back(self, name: str) -> None:
        if not self._resets:
            self._drop(name)
            return
        with self._cond:
            self._dirty.append(name)
            self._cond.notify_all()

    def close(self) -> None:
        """Finish the resets under way; drop every database."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._cond:
            names, self._clean = self._clean + list(self._dirty), []
            self._dirty.clear()
        for name in names:
            self._drop(name)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._dirty and not self._closing:
                    self._cond.wait()
                if not self._dirty:
                    return
                name = self._dirty.popleft()
                self._resetting += 1
            clean = self._reset(name)
            if not clean:
                self._drop(name)
            with self._cond:
                self._resetting -= 1
                if clean:
                    self._clean.append(name)
                self._cond.notify_all()

    def _reset(self, name: str) -> bool:
        import psycopg

        for _ in range(2):  # the test may have ended the janitor's connection too
            try:
                janitor = self._janitors.get(name)
                if janitor is None or janitor.closed:
                    janitor = self._janitors[name] = psycopg.connect(
                        with_database(self._admin_url, name), autocommit=True,
                        application_name="depfakes reset")
                if reset(janitor, keep=self._discard_sessions(name)):
                    return True
                if not janitor.broken:
                    return False
            except psycopg.OperationalError:
                pass
            self._forget(name)
        return False

    def _discard_sessions(self, name: str) -> list[int]:
        """The backends of the engine's idle pooled connections, after discarding the
        session state of each (temporary tables, settings, advisory locks, LISTEN...);
        the reset ends every other connection. A connection the test still has checked
        out is not idle: then the pool goes, and the reset ends its connections too."""
        engine = self._engines.get(name)
        if engine is None:
            return []
        pool: Any = engine.pool
        idle = []
        try:
            if pool.checkedout():
                raise RuntimeError("a connection is still checked out")
            idle = [engine.raw_connection() for _ in range(pool.checkedin())]
            pids = []
            for connection in idle:
                driver: Any = connection.driver_connection
                autocommit, driver.autocommit = driver.autocommit, True
                driver.execute(SESSION_CLEANUP)
                driver.autocommit = autocommit
                pids.append(driver.info.backend_pid)
            return pids
        except Exception:
            self._engines.pop(name).dispose()
            return []
        finally:
            for connection in idle:
                with contextlib.suppress(Exception):
                    connection.close()

    def _drop(self, name: str) -> None:
        self._forget(name)
        self._pool.drop_later(name)

    def _forget(self, name: str) -> None:
        janitor = self._janitors.pop(name, None)
        if janitor is not None:
            with contextlib.suppress(Exception):
                janitor.close()
        engine = self._engines.pop(name, None)
        if engine is not None:
            engine.dispose()
