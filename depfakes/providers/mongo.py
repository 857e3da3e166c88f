"""The ``mongo`` dependency: a real MongoDB, a database per test.

One server per session from the shared backends (docker, local ``mongod``, or a URL).
Every test gets its own database, named uniquely and dropped in the background
afterwards. ``pytest_depfakes_mongo_init(db)`` fills a template database once; each
test's database gets a copy of its collections (documents copied server-side with
``$out``, indexes re-created), which costs a few milliseconds for seed-sized data.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pytest

from depfakes.backends import (
    OWNER,
    SESSION_ID,
    BackendUnavailable,
    LocalLaunch,
    LocalRecipe,
    ServerInfo,
    ServerSpec,
    obtain,
)
from depfakes.backends import local as local_backend
from depfakes.config import Setting, Settings
from depfakes.providers.base import (
    InitHookFailed,
    Option,
    Provider,
    StartContext,
    run_init_target,
)

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient, MongoClient
    from pymongo.database import Database

DEFAULT_IMAGE = "mongo:8.0"
# MongoDB limits database names to 63 bytes; ours stay far below.
MAX_DBNAME = 63


def database_name(session_id: str, number: int) -> str:
    """A per-test database name, unique per session and within MongoDB's limits."""
    name = f"dft_{session_id[:12]}_{number}"
    if len(name.encode()) > MAX_DBNAME or not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"cannot make a MongoDB database name from {session_id!r}")
    return name


def url_with_database(url: str, dbname: str) -> str:
    """``url`` with ``dbname`` as its default database, credentials and options kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@dataclass(frozen=True)
class _Template:
    """What the init hook put in the template: collections with options and indexes."""

    name: str
    collections: tuple[tuple[str, dict[str, Any], list[dict[str, Any]], bool], ...]


class MongoHandle:
    """What a test gets as ``deps.mongo``."""

    dbname: str
    url: str

    def __init__(self, client: MongoClient[Any], server_url: str, dbname: str) -> None:
        self.client = client
        self.dbname = dbname
        self.url = url_with_database(server_url, dbname)

    @property
    def db(self) -> Database[Any]:
        """This test's database on the shared client."""
        return self.client[self.dbname]

    @cached_property
    def async_client(self) -> AsyncMongoClient[Any]:
        """A ``pymongo.AsyncMongoClient`` whose default database is this test's."""
        from pymongo import AsyncMongoClient

        return AsyncMongoClient(self.url)

    def close(self) -> None:
        # AsyncMongoClient.close() must be awaited on the test's own event loop, which is
        # gone by now; a test that opened it and cares should `await ...close()` itself.
        self.__dict__.pop("async_client", None)

    def __repr__(self) -> str:
        return f"<MongoHandle {self.dbname}>"


class HeartbeatLease:
    """A session's lease on a MongoDB server: a document in ``depfakes_leases`` renewed
    every few seconds by the owner; it lapses by itself when the owner dies, on whatever
    machine it ran (MongoDB has no lock that dies with a connection)."""

    TTL = 60.0

    def hold(self, url: str, sessions: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        return self._held(url, sessions)

    @contextlib.contextmanager
    def _held(self, url: str, sessions: Sequence[str]) -> Iterator[None]:
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(url)
        leases = client[LEASE_DB]["leases"]
        done = threading.Event()

        def renew() -> None:  # by the server's clock: the owner's may be off
            for session in sessions:
                leases.update_one({"_id": session}, [{"$set": {"expires": {
                    "$add": ["$$NOW", int(self.TTL * 1000)]}}}], upsert=True)

        def keep_renewing() -> None:
            while not done.wait(self.TTL / 6):
                with contextlib.suppress(Exception):  # the server may be going away
                    renew()

        renew()
        thread = threading.Thread(target=keep_renewing, name="depfakes-mongo-lease",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=10)
            with contextlib.suppress(Exception):
                leases.delete_many({"_id": {"$in": list(sessions)}})
            client.close()

    def held(self, url: str, session: str) -> bool:
        from pymongo import MongoClient

        client: MongoClient[Any] = MongoClient(url, serverSelectionTimeoutMS=5000)
        try:
            return _lease_held(client, session)
        finally:
            client.close()


LEASE_DB = "depfakes_leases"
_OWNED = re.compile(r"dft_([0-9a-f]{12})_\w+")


def _lease_held(client: MongoClient[Any], session: str) -> bool:
    """Whether the lease is unexpired by the server's own clock (hosts' clocks differ)."""
    lease = client[LEASE_DB]["leases"].find_one({"_id": session})
    if lease is None:
        return False
    now = client.admin.command("hello")["localTime"]
    expires = lease.get("expires")
    return isinstance(expires, type(now)) and expires > now  # another format: lapsed


class Mongod(LocalRecipe):
    """MongoDB from a ``mongod`` binary on PATH."""

    def __init__(self, version: str | None) -> None:
        mongod = local_backend.find_binary("mongod")
        if mongod is None:
            raise BackendUnavailable("no mongod on PATH; install the MongoDB server or use "
                                     "Docker or DEPFAKES_MONGO_URL")
        self.mongod, self.version = mongod, _binary_version(str(mongod))
        MongoProvider._check_version(self.version, version, f"{mongod} (version "
                                     f"{self.version})")
        self.identity = f"{mongod} (version {self.version})"

    def prepare(self, workdir: Path, port: int, user: Any) -> LocalLaunch:
        dbpath = workdir / "db"
        dbpath.mkdir()
        command = [str(self.mongod), "--dbpath", str(dbpath), "--port", str(port),
                   "--bind_ip", "127.0.0.1", "--setParameter",
                   "diagnosticDataCollectionEnabled=false"]
        if _older_than(self.version, (6, 1)):
            command.append("--nojournal")
        return LocalLaunch(command, f"mongodb://127.0.0.1:{port}/",
                           f"local {self.mongod} (port {port})")


class MongoProvider(Provider):
    name = "mongo"
    handle_type = MongoHandle
    requires = ("pymongo",)
    extra = "mongo"
    accepts_version = True
    server_info = ServerInfo(image=DEFAULT_IMAGE, port=27017, url_scheme="mongodb")
    settings = (
        Setting("mongo_init", "module:callable run once on the template database (a pymongo "
                "Database), like the pytest_depfakes_mongo_init hook.", cli=False),
    )
    options: ClassVar[Mapping[str, Option]] = {}

    @classmethod
    def check_version(cls, version: str) -> None:
        if not re.fullmatch(r"\d+(\.\d+)?", version):
            raise ValueError(f"'mongo:{version}': a MongoDB version is like 7.0 or 8")

    @classmethod
    def local_recipe(cls, version: str | None, settings: Settings) -> LocalRecipe:
        return Mongod(version)

    @classmethod
    def probe(cls, url: str) -> None:
        _ping(url, timeout_ms=3000)

    def start(self, ctx: StartContext) -> None:
        from pymongo import MongoClient

        self._server = obtain(self._spec(ctx), ctx)
        self._server_url = self._server.url
        self.description = self._server.description
        self._client: MongoClient[Any] = MongoClient(self._server_url)
        self._session = SESSION_ID
        self._numbers = itertools.count(1)
        self._pool: DatabasePool | None = None
        try:
            self._drop_databases_of_gone_sessions()
            self._template = self._build_template(ctx)
        except BaseException:
            self.stop()
            raise
        self._pool = DatabasePool(self._copy_template, self._drop,
                                  lambda: database_name(self._session, next(self._numbers)))

    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> MongoHandle:
        assert self._pool is not None
        return MongoHandle(self._client, self._server_url, self._pool.take())

    def release(self, handle: MongoHandle) -> None:
        handle.close()
        assert self._pool is not None
        self._pool.drop_later(handle.dbname)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.close()
        with contextlib.suppress(Exception):
            if getattr(self, "_template", None) is not None:
                self._client.drop_database(self._template.name)
        with contextlib.suppress(Exception):
            self._client.close()
        self._server.stop()

    # --- server -------------------------------------------------------------------------

    def _spec(self, ctx: StartContext) -> ServerSpec:
        return ServerSpec(
            dependency="mongo", version=ctx.version, info=self.server_info,
            url=lambda host, port, secret: f"mongodb://{host}:{port}/",
            ready=lambda url: _ping(url, timeout_ms=500),
            # Journaling can only be turned off before 6.1; tmpfs makes it cheap anyway.
            command=lambda secret: ["--nojournal"] if _older_than(ctx.version, (6, 1)) else [],
            tmpfs={"/data/db": ""},
            local=lambda: Mongod(ctx.version),
            lease=HeartbeatLease(),
            definition=("mongo",),
            check=lambda server: self._check_version(_server_version(server.url), ctx.version,
                                                     server.description),
        )

    @staticmethod
    def _check_version(found: str, pinned: str | None, where: str) -> None:
        if pinned and found and _version_tuple(found)[: len(_version_tuple(pinned))] != \
                _version_tuple(pinned):
            older = _version_tuple(found) < _version_tuple(pinned)
            raise BackendUnavailable(
                f"mongo:{pinned} was pinned but {where} is MongoDB {found}"
                + ("; it is too old for the pin" if older else "")
                + "; change the pin or the server")

    def _drop_databases_of_gone_sessions(self) -> None:
        """Drop databases of sessions whose lease lapsed, on whatever machine they ran."""
        gone: dict[str, bool] = {}
        for name in self._client.list_database_names():
            match = _OWNED.fullmatch(name)
            if not match or match.group(1) in OWNER.sessions():
                continue
            session = match.group(1)
            if session not in gone:
                gone[session] = not _lease_held(self._client, session)
            if gone[session]:
                with contextlib.suppress(Exception):
                    self._client.drop_database(name)

    # --- template -----------------------------------------------------------------------

    def _build_template(self, ctx: StartContext) -> _Template:
        name = f"dft_{self._session[:12]}_tpl"
        db = self._client[name]
        try:
            ctx.config.hook.pytest_depfakes_mongo_init(db=db, config=ctx.config)
            run_init_target("depfakes_mongo_init", ctx.settings.get("mongo_init"), db)
        except Exception as exc:
            raise InitHookFailed("mongo", exc) from exc
        collections = []
        for info in db.list_collections():
            if info.get("type", "collection") != "collection":
                continue
            coll = db[info["name"]]
            indexes = [spec for spec in coll.list_indexes() if spec["name"] != "_id_"]
            has_documents = coll.estimated_document_count() > 0
            collections.append((info["name"], dict(info.get("options", {})),
                                [dict(spec) for spec in indexes], has_documents))
        return _Template(name, tuple(collections))

    def _copy_template(self, dbname: str) -> None:
        from pymongo import IndexModel

        source, target = self._client[self._template.name], self._client[dbname]
        for collection, options, indexes, has_documents in self._template.collections:
            if has_documents:  # server-side copy: documents never travel to the client
                source[collection].aggregate(
                    [{"$match": {}}, {"$out": {"db": dbname, "coll": collection}}])
            else:
                target.create_collection(collection, **options)
            if indexes:
                target[collection].create_indexes([IndexModel(
                    list(spec["key"].items()),
                    **{k: v for k, v in spec.items() if k not in ("key", "v", "ns")})
                    for spec in indexes])

    def _drop(self, name: str) -> None:
        with contextlib.suppress(Exception):  # the server may be going away
            self._client.drop_database(name)


class DatabasePool:
    """Test databases copied from the template ahead of need, and used ones dropped, by
    one background thread: a test takes a ready database instead of waiting for the copy.
    When none is ready (the thread is busy, or preparing failed) it copies one itself."""

    def __init__(self, prepare: Callable[[str], None], drop: Callable[[str], None],
                 new_name: Callable[[], str], size: int = 3) -> None:
        self._prepare, self._drop, self._new_name, self._size = prepare, drop, new_name, size
        self._ready: deque[str] = deque()
        self._drops: deque[str] = deque()
        self._closing = self._failed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="depfakes-mongo-pool",
                                        daemon=True)
        self._thread.start()

    def take(self) -> str:
        with self._cond:
            if self._ready:
                self._cond.notify_all()  # room for the next one
                return self._ready.popleft()
        name = self._new_name()
        self._prepare(name)  # its error is the test's error
        return name

    def drop_later(self, name: str) -> None:
        with self._cond:
            self._drops.append(name)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._drops.extend(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        self._thread.join(timeout=60)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._drops and (self._closing or self._failed or
                                           len(self._ready) >= self._size):
                    if self._closing:
                        return
                    self._cond.wait()
                drop = self._drops.popleft() if self._drops else None
            if drop is not None:
                self._drop(drop)
                continue
            name = self._new_name()
            try:
                self._prepare(name)
            except Exception:  # tests then copy for themselves, and see the error
                self._drop(name)
                with self._cond:
                    self._failed = True
                continue
            with self._cond:
                (self._drops if self._closing else self._ready).append(name)


def _ping(url: str, timeout_ms: int) -> bool:
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(url, serverSelectionTimeoutMS=timeout_ms,
                                           connectTimeoutMS=timeout_ms)
    try:
        client.admin.command("ping")
    finally:
        client.close()
    return True


def _server_version(url: str) -> str:
    from pymongo import MongoClient

    client: MongoClient[Any] = MongoClient(url, serverSelectionTimeoutMS=3000)
    try:
        return str(client.server_info().get("version", ""))
    finally:
        client.close()


def _binary_version(mongod: str) -> str:
    try:
        out = subprocess.run([mongod, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendUnavailable(f"{mongod} --version failed ({exc})") from None
    match = re.search(r"db version v?(\d+\.\d+(?:\.\d+)?)", out.stdout + out.stderr)
    if not match:
        raise BackendUnavailable(f"{mongod} --version did not say its version: "
                                 f"{(out.stdout + out.stderr).strip()[:200]!r}")
    return match.group(1)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _older_than(version: str | None, than: tuple[int, ...]) -> bool:
    return version is not None and _version_tuple(version) < than



