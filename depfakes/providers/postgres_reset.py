"""Making a used test database like new again, in place, instead of dropping it and
cloning another from the template.

A clone costs ``CREATE DATABASE`` (two checkpoints with FILE_COPY) and ``DROP DATABASE``,
tens of milliseconds of server time per test, which the tests' own queries then wait
behind. Most tests only write rows, so the template is prepared once to say what a test
wrote:

* every table gets a statement-level trigger (``ENABLE ALWAYS``: it fires under
  ``session_replication_role = replica`` too) that notes the table in ``_depfakes.dirty``,
  once per transaction and in the writer's transaction: a rolled-back write leaves no
  note, and writers never read or lock anything shared because of it;
* an event trigger notes any DDL (temporary objects aside), and guards on ``_depfakes``'s
  own tables note a test that wiped them: then only a new clone will do;
* the rows the init hook left (seed rows) are copied into ``_depfakes.seed_<oid>``, every
  sequence's state into ``_depfakes.sequences``.

After the test, with new connections to the database refused, ``_depfakes.reset()`` ends
every client connection but the idle ones depfakes keeps for the next test (their
session state discarded first; under a stable URL, postgres_stable, also the app's, and
those it holds in a transaction that has written nothing) and waits until they are gone,
so no commit lands behind it; then it empties the noted tables (their partitions and
inheritance children too), puts their seed rows back (triggers and foreign keys off,
like a restore) and rewinds the sequences that moved; or it answers ``schema`` when
only a new clone will do. Everything lives in the ``_depfakes`` schema of the test
database; the app's own schema is untouched but for the triggers. ``Recycler`` runs the
resets on a background thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from depfakes.backends import with_database
from depfakes.providers import postgres_driver, postgres_stable

if TYPE_CHECKING:
    import sqlalchemy

    from depfakes.providers.postgres import ClonePool

SCHEMA = "_depfakes"
# Part of the template's fingerprint: templates prepared differently are not reused.
VERSION = "reset-3"

_OBJECTS = r"""
CREATE SCHEMA _depfakes;
CREATE TABLE _depfakes.dirty (relid oid NOT NULL);
CREATE TABLE _depfakes.tables (relid oid PRIMARY KEY, wipe text NOT NULL, restore text);
CREATE TABLE _depfakes.sequences (i int PRIMARY KEY, seq regclass NOT NULL,
                                  last_value bigint NOT NULL, is_called boolean NOT NULL);
CREATE TABLE _depfakes.state (large_objects bigint NOT NULL, event_triggers bigint NOT NULL);

-- Notes the table once per transaction, without reading the notes (a read would make
-- SERIALIZABLE writers of different tables conflict). The flag is transaction-local, so a
-- rolled-back write (or savepoint) takes its note with it. SECURITY DEFINER: a role the
-- test created may write to the app's tables but not here; every name is qualified.
CREATE FUNCTION _depfakes.mark() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF pg_catalog.current_setting('_depfakes.noted_' || TG_RELID, true)
     IS DISTINCT FROM 'y' THEN
    INSERT INTO _depfakes.dirty VALUES (TG_RELID);
    PERFORM pg_catalog.set_config('_depfakes.noted_' || TG_RELID, 'y', true);
  END IF;
  RETURN NULL;
END $$;

-- On _depfakes' own tables: a test that wipes "every table" wipes these too, and then
-- only a new clone will do (relid 0).
CREATE FUNCTION _depfakes.guard() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF pg_catalog.current_setting('_depfakes.resetting', true) IS DISTINCT FROM 'y' THEN
    INSERT INTO _depfakes.dirty VALUES (0);
  END IF;
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

-- keep: backends of idle connections whose session state the caller discarded. The
-- caller has forbidden new connections (ALLOW_CONNECTIONS false) for the time of it.
CREATE FUNCTION _depfakes.reset(keep int[]) RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
#variable_conflict use_column
DECLARE
  r record;
  done oid[] := '{}';
BEGIN
  PERFORM set_config('_depfakes.resetting', 'y', true);
  -- End the test's connections and wait until they are gone: a backend still exiting
  -- could commit after the notes were read. (pg_terminate_backend's own wait polls
  -- every 100 ms; this every millisecond.)
  PERFORM pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()
    AND backend_type = 'client backend' AND pid <> ALL (keep);
  FOR attempt IN 1..10000 LOOP
    PERFORM pg_stat_clear_snapshot();
    EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_stat_activity
                          WHERE datname = current_database() AND pid <> pg_backend_pid()
                            AND backend_type = 'client backend' AND pid <> ALL (keep));
    PERFORM pg_sleep(0.001);
  END LOOP;
  IF EXISTS (SELECT 1 FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND pid <> ALL (keep)) THEN
    RETURN 'busy';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database()) THEN
    RETURN 'prepared';  -- ROLLBACK PREPARED cannot run in a function
  END IF;
  -- What only a new clone undoes: DDL, large objects, event triggers, settings and
  -- attributes of the database itself, notes of tables the template did not have.
  IF EXISTS (SELECT 1 FROM _depfakes.dirty WHERE relid = 0)
     OR NOT EXISTS (SELECT 1 FROM _depfakes.state)
     OR (SELECT count(*) FROM pg_largeobject_metadata)
        <> (SELECT large_objects FROM _depfakes.state)
     OR (SELECT count(*) FROM pg_event_trigger WHERE evtenabled = 'A')
        <> (SELECT event_triggers FROM _depfakes.state)
     OR EXISTS (SELECT 1 FROM pg_database d WHERE d.datname = current_database()
                AND (d.datconnlimit <> -1 OR d.datacl IS NOT NULL
                     OR EXISTS (SELECT 1 FROM pg_db_role_setting
                                WHERE setdatabase = d.oid)))
     OR EXISTS (SELECT 1 FROM _depfakes.dirty d WHERE NOT EXISTS (
          SELECT 1 FROM _depfakes.tables t
          WHERE t.relid = coalesce(pg_partition_root(d.relid), d.relid))) THEN
    RETURN 'schema';
  END IF;
  SET LOCAL session_replication_role = replica;  -- no triggers, no foreign key checks
  SET LOCAL search_path = "$user", public;       -- as functions the restore calls expect
  -- Each noted table, its partition root, and the tables that inherit from it (a write
  -- through a parent fires the parent's trigger only).
  FOR r IN WITH RECURSIVE noted AS (
             SELECT DISTINCT coalesce(pg_partition_root(relid), relid) AS relid
             FROM _depfakes.dirty),
           tree AS (SELECT relid FROM noted UNION
                    SELECT h.inhrelid FROM pg_inherits h JOIN tree ON h.inhparent = tree.relid)
           SELECT t.relid, t.wipe, t.restore FROM _depfakes.tables t
           WHERE t.relid IN (SELECT relid FROM tree) LOOP
    EXECUTE r.wipe;
    IF r.restore IS NOT NULL THEN
      EXECUTE r.restore;
    END IF;
    done := done || r.relid;
  END LOOP;
  FOR r IN SELECT s.seq, s.last_value, s.is_called
           FROM _depfakes.sequences s JOIN _depfakes.sequences_now() n USING (i)
           WHERE (n.last_value, n.is_called) IS DISTINCT FROM (s.last_value, s.is_called)
  LOOP
    PERFORM setval(r.seq, r.last_value, r.is_called);
  END LOOP;
  -- A trigger that fires always (ENABLE ALWAYS) wrote elsewhere during the restore.
  IF EXISTS (SELECT 1 FROM _depfakes.dirty
             WHERE coalesce(pg_partition_root(relid), relid) <> ALL (done)) THEN
    RETURN 'schema';
  END IF;
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


def can_reset(connection: postgres_driver.Connection) -> bool:
    """Triggers that see every role's writes, event triggers and replica mode need a
    superuser; on a server where depfakes' role is not one, tests get clones."""
    row = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                             ).fetchone()
    return bool(row and row[0])


def prepare_template(connection: postgres_driver.Connection) -> None:
    """Install the notes, triggers and seed copies in the template (after the init hooks,
    before it is marked as a template); one transaction."""
    with connection.transaction():
        connection.execute(_OBJECTS)
        # Its own writes to _depfakes are no test's (guard()).
        connection.execute("SELECT set_config('_depfakes.resetting', 'y', true)")
        tables = connection.execute(_TABLES).fetchall()
        for oid, relkind, is_partition, name in tables:
            _trigger(connection, name, "_depfakes.mark()")
            if not is_partition:  # a partition's rows are wiped and restored by its root
                _plan(connection, oid, name, only="" if relkind == "p" else "ONLY ")
        _snapshot_sequences(connection)
        for (name,) in connection.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                "WHERE schemaname = '_depfakes'").fetchall():
            events = ("UPDATE OR DELETE OR TRUNCATE" if name == "_depfakes.dirty"
                      else "INSERT OR UPDATE OR DELETE OR TRUNCATE")
            _trigger(connection, name, "_depfakes.guard()", events)
        connection.execute("CREATE EVENT TRIGGER _depfakes_ddl ON ddl_command_end "
                           "EXECUTE FUNCTION _depfakes.mark_ddl()")
        connection.execute("ALTER EVENT TRIGGER _depfakes_ddl ENABLE ALWAYS")
        connection.execute(
            "INSERT INTO _depfakes.state SELECT (SELECT count(*) FROM pg_largeobject_metadata),"
            " (SELECT count(*) FROM pg_event_trigger WHERE evtenabled = 'A')")


def _trigger(connection: postgres_driver.Connection, table: str, function: str,
             events: str = "INSERT OR UPDATE OR DELETE OR TRUNCATE") -> None:
    """A statement trigger that fires always (session_replication_role = replica too)."""
    connection.execute(f"CREATE TRIGGER _depfakes_mark AFTER {events} ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {function}")
    connection.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER _depfakes_mark")


def _snapshot_sequences(connection: postgres_driver.Connection) -> None:
    """Every sequence's state (pg_sequences hides last_value when is_called is false), and
    a function that reads them all again in one statement (a plan PL/pgSQL caches on the
    reset's connection)."""
    sql = postgres_driver.sql

    names = [row[0] for row in connection.execute(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' "
        "AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema', '_depfakes']) "
        "ORDER BY c.oid").fetchall()]
    reads = [f"SELECT {i}, s.last_value, s.is_called FROM {name} s"
             for i, name in enumerate(names)]
    for i, name in enumerate(names):
        connection.execute(sql.SQL("INSERT INTO _depfakes.sequences SELECT %s, %s::regclass, "
                                   "last_value, is_called FROM {}").format(sql.SQL(name)),
                           (i, name))
    query = (" UNION ALL ".join(reads) if reads
             else "SELECT NULL::int, NULL::bigint, NULL::boolean WHERE false")
    connection.execute(
        "CREATE FUNCTION _depfakes.sequences_now() RETURNS TABLE (i int, last_value bigint, "
        "is_called boolean) LANGUAGE plpgsql AS $$ BEGIN RETURN QUERY " + query + "; END $$")


def _plan(connection: postgres_driver.Connection, oid: int, name: str, only: str) -> None:
    """How to empty one table and put its seed rows back."""
    restore = None
    has_rows = connection.execute(f"SELECT EXISTS (SELECT 1 FROM {only}{name})").fetchone()
    if has_rows and has_rows[0]:
        columns = connection.execute(_COLUMNS, (oid,)).fetchone()[0]
        seed = f"_depfakes.seed_{oid}"
        if columns:
            connection.execute(f"CREATE TABLE {seed} AS SELECT {columns} FROM {only}{name}")
            restore = (f"INSERT INTO {name} ({columns}) OVERRIDING SYSTEM VALUE "
                       f"SELECT {columns} FROM {seed}")
        else:  # rows without a column a restore could write (generated ones only)
            count = connection.execute(f"SELECT count(*) FROM {only}{name}").fetchone()[0]
            restore = f"INSERT INTO {name} SELECT FROM generate_series(1, {int(count)})"
    connection.execute("INSERT INTO _depfakes.tables VALUES (%s, %s, %s)",
                       (oid, f"DELETE FROM {only}{name}", restore))


def reset(connection: postgres_driver.Connection, admin: postgres_driver.Connection,
          keep: Sequence[int] = ()) -> bool:
    """Make the database ``connection`` (autocommit, superuser) is on like the template
    again, ending every other client connection but the idle ones in ``keep`` (backend
    pids whose session state the caller discarded, see SESSION_CLEANUP). False: the test
    changed what only a new clone undoes (the schema, large objects), or the database
    cannot be reset; the caller replaces it. New connections are refused meanwhile
    (through ``admin``, on another database: none can refuse them to its own), so a
    client that reconnects (a retrying thread, a subprocess still exiting) cannot write
    behind the reset."""
    sql = postgres_driver.sql

    database = sql.Identifier(connection.info.dbname)
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(database))
        try:
            outcome = _call_reset(connection, keep)
            if outcome == "prepared":  # a test left a prepared transaction (two-phase commit)
                for (gid,) in connection.execute("SELECT gid FROM pg_prepared_xacts "
                                                 "WHERE database = current_database()"):
                    connection.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
                outcome = _call_reset(connection, keep)
        finally:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(database))
    except postgres_driver.Error:  # e.g. the test dropped _depfakes, or the database itself
        return False
    return outcome == "clean"


def _call_reset(connection: postgres_driver.Connection, keep: Sequence[int]) -> str:
    row = connection.execute("SELECT _depfakes.reset(%s::int[])", (list(keep),)).fetchone()
    return str(row[0]) if row else ""


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


class Recycler:
    """The test databases of one provider. A used one is reset in place by a background
    thread while the next test runs on another, then handed out again; one that cannot
    be (the test changed the schema) is dropped by the clone pool, which also makes the
    databases this needs beyond those in rotation (two, when tests run one at a time)."""

    # How long a test waits for a reset before it takes a clone instead.
    WAIT_SECONDS = 30.0

    def __init__(self, admin_url: str, pool: ClonePool, resets: bool) -> None:
        self._admin_url, self._pool, self._resets = admin_url, pool, resets
        self._clean: list[str] = []
        self._dirty: deque[str] = deque()
        self._resetting = 0
        self._owned = 0  # databases in rotation: clean, in use, dirty or being reset
        self._closing = False
        # One connection per database, kept open: the reset runs on it.
        self._janitors: dict[str, postgres_driver.Connection] = {}
        self._admin: postgres_driver.Connection | None = None  # the reset thread's, on the server
        # deps.postgres.engine, per database, with its listener count when made: its idle
        # connections survive the reset (their session state discarded), so the next
        # test neither connects nor initializes a dialect.
        self._engines: dict[str, tuple[sqlalchemy.Engine, int]] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        if resets:
            self._thread = threading.Thread(target=self._work, name="depfakes-pg-reset",
                                            daemon=True)
            self._thread.start()

    def engine(self, name: str) -> sqlalchemy.Engine:
        if name not in self._engines:
            import sqlalchemy

            engine = sqlalchemy.create_engine(
                with_database(self._admin_url, name, postgres_driver.sqlalchemy_scheme()))
            self._engines[name] = (engine, _listeners(engine))
        return self._engines[name][0]

    def take(self) -> str:
        with self._cond:
            # A reset takes milliseconds, a clone tens: wait for one when two databases
            # are in rotation already (one being reset while a test runs on the other).
            self._cond.wait_for(lambda: self._clean or not (self._dirty or self._resetting)
                                or self._owned < 2, timeout=self.WAIT_SECONDS)
            if self._clean:
                return self._clean.pop()
            self._owned += 1
        try:
            return self._pool.take()
        except BaseException:
            with self._cond:
                self._owned -= 1
            raise

    def reset_now(self, name: str) -> bool:
        """Reset ``name`` in this thread (a stable database, whose next test must wait);
        False when only a new clone will do."""
        return self._resets and self._reset(name)

    def give_back(self, name: str) -> None:
        if not self._resets:
            self._drop(name)
            return
        with self._cond:
            self._dirty.append(name)
            self._cond.notify_all()

    def close(self) -> None:
        """Drop every database; a reset under way finishes first."""
        with self._cond:
            self._closing = True
            names, self._clean = self._clean + list(self._dirty), []
            self._dirty.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        for name in names:
            self._drop(name)
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._dirty or self._closing)
                if not self._dirty:
                    return
                name = self._dirty.popleft()
                self._resetting += 1
            clean = False
            try:
                clean = self._reset(name)
            except Exception:  # never leave take() waiting on a thread that died
                clean = False
            finally:
                keep = clean and not self._closing
                if not keep:
                    self._drop(name)
                with self._cond:
                    self._resetting -= 1
                    if keep:
                        self._clean.append(name)
                    else:
                        self._owned -= 1
                    self._cond.notify_all()

    def _reset(self, name: str) -> bool:
        for _ in range(2):  # the test may have ended the janitor's connections too
            try:
                janitor = self._janitors.get(name)
                if janitor is None or janitor.closed or janitor.broken:
                    janitor = self._janitors[name] = postgres_driver.connect(
                        with_database(self._admin_url, name), autocommit=True,
                        application_name="depfakes reset", options=_JANITOR_OPTIONS)
                if self._admin is None or self._admin.closed or self._admin.broken:
                    self._admin = postgres_driver.connect(
                        self._admin_url, autocommit=True, application_name="depfakes reset",
                        options=_JANITOR_OPTIONS)
                keep = [*self._discard_sessions(name),
                        *postgres_stable.held_harmless(name, janitor)]
                if reset(janitor, self._admin, keep=keep):
                    return True
                if not (janitor.broken or self._admin.broken):
                    return False
            except postgres_driver.OperationalError:
                pass
            self.forget(name)
        return False

    def _discard_sessions(self, name: str) -> list[int]:
        """The backends of idle pooled connections to ``name`` that survive the reset,
        their session state (temporary tables, settings, advisory locks, LISTEN...)
        discarded first; the reset ends every other connection. Those of
        deps.postgres.engine, and under a stable URL those of the app's own engines on it.
        depfakes' engine goes (and the reset ends its connections too) when the test still
        has one checked out, or added listeners or options that would outlive it."""
        pids: list[int] = []
        engine, listeners = self._engines.get(name, (None, 0))
        if engine is not None:
            changed = _listeners(engine) != listeners or engine.get_execution_options()
            kept = None if changed else _keep_idle(engine)
            if kept is None:
                self._engines.pop(name)[0].dispose()
            pids += kept or []
        for app_engine in postgres_stable.app_engines(name):
            if app_engine is not engine:
                pids += _keep_idle(app_engine, own=False) or []
        return pids

    def _drop(self, name: str) -> None:
        self.forget(name)
        self._pool.drop_later(name)

    def forget(self, name: str) -> None:
        """Close depfakes' own connections to ``name`` (its janitor, the kept engine)."""
        janitor = self._janitors.pop(name, None)
        if janitor is not None:
            with contextlib.suppress(Exception):
                janitor.close()
        engine = self._engines.pop(name, (None, 0))[0]
        if engine is not None:
            engine.dispose()


# The reset's own connection: a lock a test left cannot hold it forever, and database
# settings (ALTER DATABASE ... SET) do not change what it sees.
_JANITOR_OPTIONS = ("-c lock_timeout=10s -c statement_timeout=120s "
                    "-c default_transaction_isolation=read\\ committed")


# A kept connection's transaction settings as a new one has them (depfakes' own engine).
_FRESH = {"autocommit": False, "read_only": None, "isolation_level": None, "deferrable": None}


def _keep_idle(engine: sqlalchemy.Engine, own: bool = True) -> list[int] | None:
    """Discard the session state of each idle connection in ``engine``'s pool; their
    backend pids. None when that cannot be done (a connection still checked out, a driver
    without psycopg 3's sync API): the reset then ends them all. An app's engine (not
    ``own``) gets its connections' transaction settings back as they were."""
    pool: Any = engine.pool
    idle: list[Any] = []
    try:
        if pool.checkedout():
            return None
        idle = [engine.raw_connection() for _ in range(pool.checkedin())]
        pids = []
        for connection in idle:
            driver: Any = connection.driver_connection
            after = _FRESH if own else {attr: getattr(driver, attr) for attr in _FRESH}
            driver.autocommit = True
            driver.execute(SESSION_CLEANUP)
            for attr, value in after.items():
                setattr(driver, attr, value)
            pids.append(driver.info.backend_pid)
            postgres_stable.will_survive(connection.info)
        return pids
    except Exception:
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.invalidate()
        idle = []
        return None
    finally:
        for connection in idle:
            with contextlib.suppress(Exception):
                connection.close()


def _listeners(engine: sqlalchemy.Engine) -> int:
    """Event listeners on an engine and its pool (a test's ``event.listen`` adds one)."""
    dispatches: list[Any] = [engine.dispatch, engine.pool.dispatch]
    return sum(len(getattr(dispatch, event)) for dispatch in dispatches
               for event in dispatch._event_names)
