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

After the test, ``reset`` ends every client connection to the database (and waits until
they are gone, so no commit can land behind it), rolls back prepared transactions, and
runs ``_depfakes.reset()``: it empties the noted tables, puts their seed rows back (with
triggers and foreign keys off, like a restore) and rewinds sequences that moved; or it
answers ``schema`` when only a new clone will do. Everything lives in the ``_depfakes``
schema of the test database; the app's own schema is untouched but for the triggers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

SCHEMA = "_depfakes"
# Part of the template's fingerprint: templates prepared differently are not reused.
VERSION = "reset-1"

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

CREATE FUNCTION _depfakes.reset() RETURNS text LANGUAGE plpgsql
SET search_path = pg_catalog AS $$
DECLARE
  r record;
BEGIN
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
    pids whose session state the caller discarded). False: the test changed what only a
    new clone undoes (the schema, large objects), or the database cannot be reset; the
    caller replaces it."""
    import psycopg

    try:
        _end_other_connections(connection, keep)
        for (gid,) in connection.execute("SELECT gid FROM pg_prepared_xacts "
                                         "WHERE database = current_database()").fetchall():
            connection.execute(f"ROLLBACK PREPARED {_literal(connection, gid)}")
        row = connection.execute("SELECT _depfakes.reset()").fetchone()
    except psycopg.Error:  # e.g. the test dropped _depfakes, or the database itself
        return False
    return bool(row and row[0] == "clean")


def _end_other_connections(connection: psycopg.Connection[Any], keep: Sequence[int]) -> None:
    """Terminate the test's client connections and wait until they are gone: a backend
    still exiting could commit after the reset read the notes."""
    others = ("FROM pg_stat_activity WHERE datname = current_database() "
              "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
              "AND pid <> ALL (%s::int[])")
    if connection.info.server_version >= 140000:  # waits for the exit itself
        connection.execute(f"SELECT pg_terminate_backend(pid, 10000) {others}", (list(keep),))
        return
    connection.execute(f"SELECT pg_terminate_backend(pid) {others}", (list(keep),))
    for _ in range(1000):
        connection.execute("SELECT pg_stat_clear_snapshot()")
        if not connection.execute(f"SELECT EXISTS (SELECT 1 {others})",  # type: ignore[index]
                                  (list(keep),)).fetchone()[0]:
            return
        with contextlib.suppress(Exception):
            connection.execute("SELECT pg_sleep(0.005)")


def _literal(connection: psycopg.Connection[Any], value: str) -> str:
    from psycopg import sql

    return sql.Literal(value).as_string(connection)
