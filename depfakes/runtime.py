"""Session state: one provider instance per (dependency, version), started once in the
background as soon as collection shows a test needs it, stopped at session end, and the
timings the terminal summary reports.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from depfakes import registry
from depfakes.backends import IMPORT_LOCK, make_session_dir, sweep_session_dirs
from depfakes.backends import local as local_backend
from depfakes.backends.shared import SharedRun
from depfakes.config import Settings
from depfakes.errors import DepfakesError
from depfakes.progress import ServerStatus, TestCost
from depfakes.providers.base import Provider, StartContext, Unavailable

Key = tuple[str, "str | None"]
T = TypeVar("T")


def _import(module: str, attempts: int = 3) -> None:
    """Import ``module`` from a start's thread. Warning filters are global: pytest swaps a
    test's in (``-W error``) on the main thread meanwhile, and a library's own silencing
    done while it imports (requests ignores urllib3's DependencyWarning) can be lost in
    the swap, the warning raised as an error. Python unloads what failed: try again."""
    for attempt in range(attempts):
        try:
            importlib.import_module(module)
            return
        except Warning:
            if attempt == attempts - 1:
                raise


class MainThreadWork:
    """Work a background start hands to pytest's main thread, which does it while a test
    waits for that start. Some of what builds a template must run there: Django's ORM, say,
    which pytest-django blocks for every thread at once, and a session fixture, which only
    a test's request can resolve. Jobs get the waiting test's item."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[pytest.Item | None], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._closed = False

    def run(self, job: Callable[[pytest.Item | None], T]) -> T:
        """Do ``job`` on the main thread, from a background start; wait for its result."""
        if threading.current_thread() is threading.main_thread():
            return job(None)  # no test to wait for it: do it now
        done: Future[T] = Future()
        self._jobs.put((job, done))
        if self._closed:
            self.close()
        return done.result()

    def wake(self) -> None:
        """End a ``serve`` that is waiting (a start just finished)."""
        self._jobs.put(None)

    def serve(self, item: pytest.Item | None, seconds: float) -> None:
        """On the main thread: wait up to ``seconds`` for a job, and do it."""
        try:
            entry = self._jobs.get(timeout=seconds)
        except queue.Empty:
            return
        if entry is not None and entry[1].set_running_or_notify_cancel():
            job, done = entry
            try:
                done.set_result(job(item))
            except BaseException as exc:  # the start reports it, with its traceback
                done.set_exception(exc)

    def close(self) -> None:
        """The session is ending: jobs no test will do fail their starts instead."""
        self._closed = True
        with contextlib.suppress(queue.Empty):
            while True:
                entry = self._jobs.get_nowait()
                if entry is not None and entry[1].set_running_or_notify_cancel():
                    entry[1].set_exception(DepfakesError(
                        "no test waited for this start (the session ended first)"))


def key_label(key: Key) -> str:
    name, version = key
    return f"{name}:{version}" if version else name


class Runtime:
    def __init__(self, config: pytest.Config, settings: Settings,
                 shared: SharedRun | None = None) -> None:
        self.config = config
        self.settings = settings
        self.shared = shared
        # Seconds each dependency took to start (label -> seconds, None until started).
        self.start_seconds: dict[str, float | None] = {}
        self._starts: dict[Key, Future[Provider]] = {}
        # Where a start failed first, so later tests point there instead of repeating it.
        self._first_failure: dict[Key, str] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="depfakes-start")
        self._workdir: Path | None = None
        self._status_text: dict[Key, str] = {}
        self._server_status: ServerStatus | None = None
        self.costs: list[TestCost] = []
        self.main_thread = MainThreadWork()
        # Providers whose server started before conftest.py loaded (start_server_now),
        # and what failed there (reported by the first test that needs it).
        self._early: dict[Key, Provider] = {}
        self._early_errors: dict[Key, BaseException] = {}

    @property
    def strict(self) -> bool:
        return bool(self.settings.get("strict"))

    def prepare(self, name: str, version: str | None) -> None:
        """Start the provider in the background unless it is started or starting."""
        key = (name, version)
        with self._lock:
            if key not in self._starts:
                self.start_seconds.setdefault(key_label(key), None)
                self._starts[key] = self._executor.submit(self._start, key)
                self._starts[key].add_done_callback(lambda _: self.main_thread.wake())

    def provider_for(self, item: pytest.Item, name: str, version: str | None) -> Provider:
        """The started provider; skip or fail the test (once, clearly) when it cannot start."""
        self.prepare(name, version)
        key = (name, version)
        if self._server_status is None:  # the terminal reporter exists only after configure
            self._server_status = ServerStatus(self.config)
        future = self._starts[key]
        self._server_status.wait(key_label(key), future,
                                 lambda: self._status_text.get(key, "starting"),
                                 lambda seconds: self.main_thread.serve(item, seconds))
        try:
            provider = future.result()
        except Exception as exc:
            self._report_failed_start(item, key, exc)
            raise
        self._server_status.ready(key_label(key), provider.description,
                                  self.start_seconds[key_label(key)])
        return provider

    def _report_failed_start(self, item: pytest.Item, key: Key, exc: Exception) -> None:
        """Skip or fail the test for a start that failed (``from None``: the message is the
        whole story, not a chain of exceptions). Returns only for errors of no known kind,
        which propagate with their traceback."""
        name = key[0]
        if isinstance(exc, Unavailable):
            message = f"depfakes: {key_label(key)} is not available here: {exc}"
            if self.strict and name not in self.settings.get("optional"):
                raise pytest.fail.Exception(
                    f"{message} (failing, not skipping, because --deps-strict is on)",
                    pytrace=False) from None
            raise pytest.skip.Exception(message, allow_module_level=False) from None
        first = self._first_failure.setdefault(key, item.nodeid)
        if first != item.nodeid:
            raise pytest.fail.Exception(f"depfakes: {key_label(key)} failed to start; the "
                                        f"error is shown once, at {first}", pytrace=False) \
                from None
        if isinstance(exc, DepfakesError):
            raise pytest.fail.Exception(f"depfakes: {key_label(key)} failed to start: {exc}",
                                        pytrace=False) from None

    def resolve_options(self, provider: Provider, marker_options: Mapping[str, Any]) -> dict[
            str, Any]:
        resolved: dict[str, Any] = {}
        for option_name, option in provider.options.items():
            if option_name in marker_options:
                resolved[option_name] = marker_options[option_name]
            elif option.setting is not None and option.setting in self.settings:
                value, source = self.settings.lookup(option.setting)
                resolved[option_name] = option.default if source == "default" else value
            else:
                resolved[option_name] = option.default
        return resolved

    def record(self, nodeid: str, key: Key, wait: float, setup: float, teardown: float) -> None:
        self.costs.append(TestCost(nodeid, key_label(key), wait, setup, teardown))

    def export(self) -> dict[str, Any]:
        """Start times and costs as JSON-able data, for an xdist worker's controller."""
        return {"start_seconds": self.start_seconds,
                "costs": [[c.nodeid, c.dependency, c.wait, c.setup, c.teardown]
                          for c in self.costs]}

    def merge(self, exported: dict[str, Any]) -> None:
        """Add a worker's export (the controller reports the whole run)."""
        for label, start in exported["start_seconds"].items():
            # Workers after the first adopt the server: the run waited for the slowest.
            known = self.start_seconds.get(label)
            self.start_seconds[label] = max(filter(None, (known, start)), default=None)
        self.costs += [TestCost(*cost) for cost in exported["costs"]]

    def stop(self) -> None:
        self.main_thread.close()
        self._executor.shutdown(wait=True)
        for key, provider in self._early.items():  # its server alone (an xdist controller)
            try:
                provider.stop()
            except Exception as exc:
                warnings.warn(f"depfakes: stopping {key_label(key)} failed: {exc!r}",
                              stacklevel=1)
        for key, future in self._starts.items():
            if future.exception() is not None:
                continue
            try:
                future.result().stop()
            except Exception as exc:  # one provider's failure must not leak the others
                warnings.warn(f"depfakes: stopping {key_label(key)} failed: {exc!r}",
                              stacklevel=1)
        if self._workdir is not None and self.shared is None:
            # A shared run's files may hold a server other workers use: the controller
            # removes them after the last worker.
            shutil.rmtree(self._workdir, ignore_errors=True)

    def start_server_now(self, name: str) -> Provider | None:
        """Start ``name``'s server in this thread, before conftest.py loads (its address is
        exported then); the rest of its start runs later, like any other. None when it
        cannot start: the first test that needs it reports why."""
        key = (name, None)
        began = time.perf_counter()
        try:
            provider = self._new_provider(name)
            ctx = self._context(key, type(provider))
            with ctx.held:
                provider.start_server(ctx)
        except Exception as exc:
            self._early_errors[key] = exc
            return None
        self.start_seconds[key_label(key)] = time.perf_counter() - began
        self._early[key] = provider
        return provider

    def wait_quietly(self, name: str) -> None:
        """Wait until ``name`` has started (or failed: its tests report it), serving the
        work a start hands to this thread meanwhile."""
        self.prepare(name, None)
        future = self._starts[(name, None)]
        while not future.done():
            self.main_thread.serve(None, 0.05)

    def _start(self, key: Key) -> Provider:
        if key in self._early_errors:
            raise self._early_errors[key]
        began = time.perf_counter()
        provider = self._early.pop(key, None) or self._new_provider(key[0])
        ctx = self._context(key, type(provider))
        with ctx.held:  # xdist: the shared server's lock, taken by ctx.server()
            provider.start(ctx)
        self.start_seconds[key_label(key)] = (time.perf_counter() - began
                                              + (self.start_seconds.get(key_label(key)) or 0))
        return provider

    def _new_provider(self, name: str) -> Provider:
        cls = registry.get(name)
        cls.check_installed()
        self._preload(cls)
        return cls()

    def _context(self, key: Key, cls: type[Provider]) -> StartContext:
        return StartContext(name=key[0], version=key[1], settings=self.settings,
                            config=self.config, provider_class=cls,
                            workdir=self._provider_dir(key), shared=self.shared,
                            status=lambda text: self._status_text.__setitem__(key, text))

    def _preload(self, cls: type[Provider]) -> None:
        """Import what the start needs, one provider at a time: starts run in parallel
        threads, and two threads importing the same packages (requests, via docker-py and
        botocore) can see one half-initialised where no bytecode is cached."""
        modules = [*cls.requires, *cls.preload]
        forced = self.settings.get("backend").get(cls.name, "auto")
        info = cls.server_info
        if (info is not None and not info.own_backends and forced in ("auto", "docker")) or \
                forced == "docker":
            modules += ["docker", "testcontainers.core.container"]
        with IMPORT_LOCK:
            for module in modules:
                with contextlib.suppress(ImportError):  # reported where it is needed
                    _import(module)

    def _provider_dir(self, key: Key) -> Path:
        with self._lock:
            if self._workdir is None:
                # What killed sessions of this host left: their servers, then their files.
                local_backend.sweep_dead_local_servers()
                sweep_session_dirs()
                self._workdir = make_session_dir(
                    "depfakes-session-", self.shared.directory if self.shared else None)
        path = self._workdir / key_label(key).replace(":", "-")
        path.mkdir(exist_ok=True)
        return path
