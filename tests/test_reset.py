"""Databases reset in place: a randomized isolation suite on a real server.

Every test of the generated suite first checks that its database is exactly the
template (every row, every sequence, the schema, no locks, no large objects), then does
random damage through its own connections: commits to random tables, updates and deletes
seed rows, truncates, bumps sequences, creates tables, writes under
session_replication_role = replica, and leaves open transactions, row locks and advisory
locks behind on connections it never closes. Any leak fails a later test.
"""

from __future__ import annotations

import json

import pytest

from tests.servers import local_ok, need

pytestmark = pytest.mark.serial

SCHEMA = r'''
CREATE TABLE orgs (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    org_id int REFERENCES orgs ON DELETE CASCADE, email text NOT NULL,
                    email_lower text GENERATED ALWAYS AS (lower(email)) STORED);
CREATE TABLE posts (id serial PRIMARY KEY, user_id bigint REFERENCES users ON DELETE CASCADE,
                    body text, created timestamptz DEFAULT now());
CREATE INDEX ON posts (user_id, created);
CREATE TABLE events (id bigserial, at date NOT NULL, kind text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE audit (id serial PRIMARY KEY, note text);
CREATE TABLE audit_archive (archived boolean DEFAULT true) INHERITS (audit);
CREATE TABLE counters (name text PRIMARY KEY, value int NOT NULL);
CREATE SEQUENCE tickets;
CREATE SEQUENCE later_ids;
SELECT setval('later_ids', 100, false);
CREATE FUNCTION log_post() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (note) VALUES ('post ' || NEW.id); RETURN NEW; END $$;
CREATE TRIGGER posts_log AFTER INSERT ON posts FOR EACH ROW EXECUTE FUNCTION log_post();
INSERT INTO orgs (name) VALUES ('acme'), ('globex');
INSERT INTO users (org_id, email) VALUES (1, 'Ann@Acme.test'), (2, 'Bob@Globex.test');
INSERT INTO counters VALUES ('visits', 7);
INSERT INTO events (at, kind) VALUES ('2025-06-01', 'seeded');
INSERT INTO audit_archive (note) VALUES ('archived seed');
SELECT nextval('tickets');
SELECT setval('orgs_id_seq', 50, false);  -- the next org is 50, not 3: is_called kept
'''

CONFTEST = f'''
import psycopg

def pytest_depfakes_postgres_init(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute({SCHEMA!r})
'''

SUITE = r'''
import asyncio, json, os, random

import psycopg
import pytest
import sqlalchemy as sa

REFERENCE = []
LEFT_OPEN = []  # connections the tests "forget": open transactions, locks


def snapshot(conn):
    tables = [r[0] for r in conn.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname "
        "NOT IN ('pg_catalog', 'information_schema', '_depfakes') ORDER BY 1")]
    rows = {t: conn.execute(f"SELECT coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)),"
                            f" '') FROM ONLY {t} x").fetchone()[0] for t in tables}
    names = [r[0] for r in conn.execute("SELECT sequencename FROM pg_sequences "
                                         "WHERE schemaname = 'public' ORDER BY 1")]
    sequences = [conn.execute(f"SELECT last_value, is_called FROM {name}").fetchone()
                 for name in names]  # pg_sequences hides last_value when is_called is false
    columns = conn.execute("SELECT table_name, column_name, data_type FROM "
                           "information_schema.columns WHERE table_schema = 'public' "
                           "ORDER BY 1, 2").fetchall()
    objects = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0]
    return json.loads(json.dumps([tables, rows, sequences, columns, objects], default=str))


def assert_handle_like_new(deps):
    session = deps.postgres.session
    assert session.execute(sa.text("SHOW search_path")).scalar() == '"$user", public'
    assert session.execute(sa.text(
        "SELECT count(*) FROM pg_class WHERE relpersistence = 't'")).scalar() == 0
    assert session.execute(sa.text("SELECT count(*) FROM pg_listening_channels()")).scalar() == 0
    session.rollback()


def assert_like_template(dsn):
    with psycopg.connect(dsn) as conn:
        state = snapshot(conn)
        if not REFERENCE:
            REFERENCE.append(state)  # the first test's database is a fresh clone
        assert state == REFERENCE[0]
        assert conn.execute("SHOW search_path").fetchone()[0] == '"$user", public'
        conn.execute("SET lock_timeout = '3s'")
        conn.execute("LOCK TABLE orgs, users, posts, events, audit, counters "
                     "IN ACCESS EXCLUSIVE MODE")  # nothing left locked
        assert conn.execute("SELECT pg_try_advisory_xact_lock(4242)").fetchone()[0]
        conn.rollback()


def commit_rows(dsn, rng):
    with psycopg.connect(dsn) as conn:
        org = conn.execute("INSERT INTO orgs (name) VALUES (%s) RETURNING id",
                           (f"org-{rng.random()}",)).fetchone()[0]
        user = conn.execute("INSERT INTO users (org_id, email) VALUES (%s, 'X@Y.test') "
                            "RETURNING id", (org,)).fetchone()[0]
        conn.cursor().executemany("INSERT INTO posts (user_id, body) VALUES (%s, %s)",
                                  [(user, f"p{i}") for i in range(rng.randint(1, 20))])


def change_seeds(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE counters SET value = value + %s", (rng.randint(1, 9),))
        conn.execute("UPDATE users SET email = 'changed@x.test' WHERE id = 1")
        if rng.random() < 0.5:
            conn.execute("DELETE FROM orgs WHERE name = 'globex'")  # cascades to users


def truncate(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute(rng.choice(["TRUNCATE posts", "TRUNCATE orgs CASCADE",
                                 "TRUNCATE counters", "TRUNCATE events"]))


def bump_sequences(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT nextval('tickets') FROM generate_series(1, %s)",
                     (rng.randint(1, 5),))
        with conn.transaction(force_rollback=True):  # the row goes, the ids stay used
            conn.execute("INSERT INTO orgs (name) VALUES ('rolled back')")


def partitions(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO events (at, kind) VALUES ('2026-03-01', 'via parent')")
        conn.execute("INSERT INTO events_2025 (at, kind) VALUES ('2025-03-01', 'direct')")
        conn.execute("INSERT INTO audit_archive (note) VALUES ('child')")
        conn.execute("UPDATE events SET kind = 'moved', at = '2026-01-02' WHERE kind = 'seeded'")


def replica_mode(dsn, rng):
    with psycopg.connect(dsn) as conn:  # the way bulk loaders skip triggers and FKs
        try:
            conn.execute("SET session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:  # a server's non-superuser role
            return
        conn.execute("INSERT INTO posts (user_id, body) VALUES (999, 'no such user')")


def create_table(dsn, rng):
    with psycopg.connect(dsn) as conn:
        ddl = rng.choice(["CREATE TABLE extra (id int)", "ALTER TABLE posts ADD COLUMN x int",
                          "DROP TRIGGER posts_log ON posts", "CREATE INDEX ON orgs (lower(name))",
                          "CREATE SEQUENCE more_ids"])
        conn.execute(ddl)


def through_parent(dsn, rng):
    with psycopg.connect(dsn) as conn:  # the child's seed row, through the parent only
        conn.execute(rng.choice(["UPDATE audit SET note = 'through the parent'",
                                 "DELETE FROM audit"]))


def cascade_only(dsn, rng):
    with psycopg.connect(dsn) as conn:  # users' seed rows go by the cascade alone
        conn.execute("DELETE FROM orgs WHERE id = 2")


def sequence_state(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute(rng.choice(["SELECT setval('tickets', 1000, false)",
                                 "SELECT nextval('later_ids')",
                                 "SELECT setval('later_ids', 7, true)"]))
        conn.execute("INSERT INTO orgs (name) VALUES (%s)", (f"seq-{rng.random()}",))


def wipe_every_table(dsn, rng):
    with psycopg.connect(dsn) as conn:  # a cleanup helper many projects have
        conn.execute("""DO $$ DECLARE t record; BEGIN
            FOR t IN SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN
                     ('pg_catalog', 'information_schema') LOOP
              EXECUTE format('TRUNCATE %I.%I CASCADE', t.schemaname, t.tablename);
            END LOOP; END $$""")


def serializable_writers(dsn, rng):
    a, b = psycopg.connect(dsn), psycopg.connect(dsn)
    for conn in (a, b):
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    a.execute("UPDATE counters SET value = value + 1")
    b.execute("INSERT INTO orgs (name) VALUES (%s)", (f"ser-{rng.random()}",))
    a.commit()
    b.commit()  # different tables: no serialization failure
    a.close()
    b.close()


def database_setting(dsn, rng):
    with psycopg.connect(dsn, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET search_path = nowhere')


def engine_listener(dsn, rng, deps):
    from sqlalchemy import event

    def search_path(dbapi_connection, record, proxy):
        dbapi_connection.execute("SET search_path = tenant_a, public")
    event.listen(deps.postgres.engine, "checkout", search_path)
    deps.postgres.session.execute(sa.text("SELECT 1"))


def temp_table(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE scratch AS SELECT * FROM orgs")
        conn.execute("INSERT INTO scratch SELECT * FROM orgs")


def large_object(dsn, rng):
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT lo_from_bytea(0, 'blob')")


def leave_open_transaction(dsn, rng):
    conn = psycopg.connect(dsn)
    conn.execute("INSERT INTO counters VALUES (%s, 1)", (f"open-{rng.random()}",))
    conn.execute("SELECT * FROM orgs WHERE id = 1 FOR UPDATE")  # a row lock, never released
    LEFT_OPEN.append(conn)


def leave_locks(dsn, rng):
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("SELECT pg_try_advisory_lock(4242)")  # twice in a test: held already
    conn.execute("INSERT INTO audit (note) VALUES ('committed before the lock')")
    LEFT_OPEN.append(conn)


def orm_commit(dsn, rng):
    engine = sa.create_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO counters VALUES (:n, 1)"), {"n": f"orm-{rng.random()}"})
    engine.dispose()


def handle_session_state(dsn, rng, deps):
    """deps.postgres.engine's connections outlive the test; their session state must not."""
    session = deps.postgres.session
    session.execute(sa.text("INSERT INTO counters VALUES (:n, 2)"), {"n": f"s-{rng.random()}"})
    session.execute(sa.text("SET search_path = nowhere, public"))
    session.execute(sa.text("CREATE TEMP TABLE IF NOT EXISTS mine (x int)"))
    session.execute(sa.text("SELECT pg_advisory_lock(4242)"))
    session.execute(sa.text("LISTEN somewhere"))
    session.commit()
    if rng.random() < 0.5:  # and one left uncommitted, with a row lock
        session.execute(sa.text("UPDATE counters SET value = 0 WHERE name = 'visits'"))


def async_commit(dsn, rng):
    async def write():
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await conn.execute("INSERT INTO audit (note) VALUES ('async')")
    asyncio.run(write())


# What only a new clone undoes: a test that did one of these gets its database replaced.
NEEDS_CLONE = {create_table, large_object, wipe_every_table, database_setting}

ACTIONS = [commit_rows, change_seeds, truncate, bump_sequences, partitions, replica_mode,
           create_table, temp_table, large_object, orm_commit, async_commit, through_parent,
           cascade_only, sequence_state, wipe_every_table, serializable_writers]
WEIGHTS = [8, 5, 3, 4, 3, 2, 1, 2, 1, 3, 2, 2, 2, 3, 1, 2]
# Last: the test's next action would wait for the locks they leave, or see the setting.
LEAVING = [leave_open_transaction, leave_locks, database_setting]


@pytest.mark.deps("postgres")
@pytest.mark.parametrize("n", range(N))
def test_random(deps, n):
    assert_like_template(deps.postgres.dsn)
    assert_handle_like_new(deps)
    rng = random.Random(n)
    done = rng.choices(ACTIONS, WEIGHTS, k=rng.randint(1, 4))
    for action in done:
        action(deps.postgres.dsn, rng)
    if rng.random() < 0.3:
        handle_session_state(deps.postgres.dsn, rng, deps)
    if rng.random() < 0.05:
        engine_listener(deps.postgres.dsn, rng, deps)
    for action in LEAVING:
        if rng.random() < (0.03 if action is database_setting else 0.2):
            action(deps.postgres.dsn, rng)
            done.append(action)
    with psycopg.connect(deps.postgres.admin_dsn) as admin:  # for the flat-count check
        count, size = admin.execute(
            "SELECT count(*), sum(pg_database_size(datname)) FROM pg_database "
            "WHERE datname LIKE 'depfakes%%'").fetchone()
    with open(os.environ["RESET_STATS"], "a") as out:
        out.write(json.dumps([n, count, int(size), deps.postgres.dbname,
                              bool(NEEDS_CLONE.intersection(done))]) + "\n")
'''


def _run_suite(project, pytester, tmp_path, monkeypatch, tests, *args):
    stats = tmp_path / "stats.jsonl"
    monkeypatch.setenv("RESET_STATS", str(stats))
    project(SUITE.replace("range(N)", f"range({tests})"), conftest=CONFTEST)
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly", *args)
    result.assert_outcomes(passed=tests)
    return [json.loads(line) for line in stats.read_text().splitlines()], result


def test_randomized_isolation_suite_leaks_nothing_and_stays_flat(project, pytester, tmp_path,
                                                                 monkeypatch):
    need(local_ok(), "PostgreSQL binaries")
    rows, _ = _run_suite(project, pytester, tmp_path, monkeypatch, 500,
                         "--deps-backend", "postgres=local")
    counts = [count for _, count, *_ in rows]
    # The template, two databases in rotation (one in use, one being reset) and a spare
    # clone; one more while a database whose schema a test changed is being dropped.
    assert max(counts) <= 5, counts
    sizes = [size for _, _, size, *_ in rows]
    assert max(sizes[-50:]) < 1.3 * max(sizes[:50]), (sizes[:50], sizes[-50:])
    # Reset, not cloned: a new database only after a test did what a reset cannot undo
    # (and the one or two that start the rotation).
    changed = sum(needs_clone for *_, needs_clone in rows)
    assert len({row[3] for row in rows}) <= changed + 2, changed


def test_clone_mode_isolates_the_same_suite(project, pytester, tmp_path, monkeypatch):
    """depfakes_postgres_reset = clone: every test a fresh clone, as before resets."""
    need(local_ok(), "PostgreSQL binaries")
    monkeypatch.setenv("DEPFAKES_POSTGRES_RESET", "clone")
    rows, _ = _run_suite(project, pytester, tmp_path, monkeypatch, 40,
                         "--deps-backend", "postgres=local")
    assert len({row[3] for row in rows}) == len(rows)  # a new database every time


def test_a_stable_url_isolates_the_same_suite(project, pytester, tmp_path, monkeypatch):
    """depfakes_postgres_stable_url: one database name all session, reset in the test's
    teardown (or replaced by a clone renamed into place)."""
    need(local_ok(), "PostgreSQL binaries")
    monkeypatch.setenv("DEPFAKES_POSTGRES_STABLE_URL", "true")
    rows, _ = _run_suite(project, pytester, tmp_path, monkeypatch, 200,
                         "--deps-backend", "postgres=local")
    assert len({row[3] for row in rows}) == 1
    counts = [count for _, count, *_ in rows]
    assert max(counts) <= 4, counts  # the template, the stable one, a spare, one dropping


def test_a_role_that_is_not_superuser_gets_clones_and_the_same_isolation(
        project, pytester, tmp_path, monkeypatch, postgres_server):
    """A shared server where depfakes' role may create databases but is no superuser:
    no triggers of its own can be trusted there, so tests get clones."""
    import psycopg
    from psycopg import sql

    role = "ci_limited"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD 'limited-pw'").format(
            sql.Identifier(role)))
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(postgres_server)
    url = urlunsplit(parts._replace(netloc=f"{role}:limited-pw@{parts.hostname}:{parts.port}"))
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", url)
    rows, _ = _run_suite(project, pytester, tmp_path, monkeypatch, 40,
                         "--deps-backend", "postgres=url")
    assert len({row[3] for row in rows}) == len(rows)
    with psycopg.connect(postgres_server) as admin:
        left = admin.execute("SELECT count(*) FROM pg_database WHERE datname LIKE "
                             "'depfakes%'").fetchone()[0]
    assert left == 0


def test_a_test_may_copy_its_own_database_and_its_connections_end(project, pytester):
    """create_database(template=its own) needs the database without other connections
    (depfakes closes its own); a test's engine connections end with the reset, and the
    next test on that database finds none of them."""
    need(local_ok(), "PostgreSQL binaries")
    project("""
        import psycopg, pytest

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(4))
        def test_copy(deps, n):
            with psycopg.connect(deps.postgres.admin_dsn) as admin:
                others = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                       "datname = %s AND application_name <> 'depfakes "
                                       "reset'", (deps.postgres.dbname,)).fetchone()[0]
            assert others <= 1  # at most deps.postgres.engine's idle pooled connection
            with deps.postgres.connect(autocommit=True) as conn:
                conn.execute("INSERT INTO items VALUES (%s)", (n,))
            deps.postgres.session.close()
            copy = deps.postgres.create_database(template=deps.postgres.dbname)
            with psycopg.connect(copy) as conn:
                assert conn.execute("SELECT array_agg(n) FROM items").fetchone()[0] == [n]
    """, conftest="""
        import psycopg

        def pytest_depfakes_postgres_init(dsn):
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE items (n int)")
    """)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-backend",
                                           "postgres=local")
    result.assert_outcomes(passed=4)


def test_after_a_schema_change_two_databases_rotate_again(project, pytester, tmp_path,
                                                          monkeypatch):
    """A test that ran DDL costs its database; the next ones still get a database reset
    while they ran on another (two in rotation), not one that each must wait for."""
    need(local_ok(), "PostgreSQL binaries")
    names = tmp_path / "names"
    monkeypatch.setenv("NAMES", str(names))
    project("""
        import os, pytest

        @pytest.mark.deps("postgres")
        @pytest.mark.parametrize("n", range(10))
        def test_rotation(deps, n):
            if n == 1:
                deps.postgres.connect(autocommit=True).execute("CREATE TABLE extra (x int)")
            with open(os.environ["NAMES"], "a") as out:
                out.write(deps.postgres.dbname + "\\n")
    """, conftest="""
        import psycopg

        def pytest_depfakes_postgres_init(dsn):
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE items (n int)")
    """)
    pytester.runpytest_subprocess("-p", "no:randomly", "--deps-backend",
                                  "postgres=local").assert_outcomes(passed=10)
    after = names.read_text().split()[3:]
    assert len(set(after)) >= 2, after
