"""What the terminal shows about servers: a live status line while a test waits for one to
start, one line per server once it is ready, and the cost of each test's dependencies.

Only the main thread writes to the terminal (servers start in background threads, and
pytest's own output is not thread-safe). The live line needs a terminal and normal
verbosity; under ``-q`` or in a CI log only the one line per server is written.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class TestCost:
    """What one dependency cost one test, in seconds."""

    __test__ = False  # not a test class, whatever pytest's name pattern says

    nodeid: str
    dependency: str
    wait: float  # for its server to start, when this test was the first to need it
    setup: float  # acquire: a fresh database, fake server, router...
    teardown: float  # release: rollback, drop, reset

    @property
    def total(self) -> float:
        return self.wait + self.setup + self.teardown


class ServerStatus:
    def __init__(self, config: pytest.Config) -> None:
        self._reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
        # Tests run with output capture on; these lines are for the terminal.
        self._capture: Any = config.pluginmanager.get_plugin("capturemanager")
        self._live = bool(self._reporter is not None and self._reporter.isatty
                          and config.get_verbosity() >= 0)
        self._announced: set[str] = set()

    def wait(self, label: str, future: Future[Any], status: Callable[[], str],
             step: Callable[[float], None]) -> None:
        """Block until ``future`` is done, showing a status line meanwhile if live.
        ``step(seconds)`` waits at most that long (and may do work meanwhile)."""
        if not self._live:
            while not future.done():
                step(1.0)
            return
        with self._uncaptured():
            self._show_until_done(label, future, status, step)

    def _show_until_done(self, label: str, future: Future[Any], status: Callable[[], str],
                         step: Callable[[float], None]) -> None:
        began = time.monotonic()
        shown = False
        while not future.done():
            step(0.1)
            if future.done():
                break
            if not shown:
                self._reporter.ensure_newline()
                shown = True
            self._reporter.rewrite(f"depfakes: {label}: {status()} "
                                   f"{time.monotonic() - began:.1f} s", erase=True)
        if shown:
            self._reporter.rewrite("", erase=True)

    def ready(self, label: str, description: str | None, seconds: float | None) -> None:
        """One line per server, the first time a test uses it."""
        if self._reporter is None or description is None or label in self._announced:
            return
        self._announced.add(label)
        took = "" if seconds is None else f" in {seconds:.1f} s"
        with self._uncaptured():
            self._reporter.ensure_newline()
            self._reporter.write_line(f"depfakes: {label} ready{took}: {description}")

    def _uncaptured(self) -> Any:
        if self._capture is None:
            return contextlib.nullcontext()
        return self._capture.global_and_fixture_disabled()


def report_lines(start_seconds: dict[str, float | None], costs: list[TestCost],
                 every_test: bool) -> list[str]:
    """Per dependency its start and median cost per test, the slowest setups, and with
    ``every_test`` what each test's dependencies cost."""
    per_test: dict[str, list[float]] = {}
    for cost in costs:
        per_test.setdefault(cost.dependency, []).append(cost.setup + cost.teardown)
    lines = []
    for label, seconds in sorted(per_test.items()):
        start = start_seconds.get(label)
        setup = "-" if start is None else f"{start * 1000:.1f} ms"
        lines.append(f"{label:<16} {len(seconds):>6} test{'' if len(seconds) == 1 else 's'}  "
                     f" setup {setup:>10}   median {statistics.median(seconds) * 1000:.2f} "
                     "ms/test")
    slowest = sorted(costs, key=lambda cost: cost.total, reverse=True)[:3]
    if slowest:
        lines.append("slowest setups:")
        lines += [f"  {_duration(c.total):>9}  {c.dependency:<10} {c.nodeid}{_waited(c)}"
                  for c in slowest]
    if every_test:
        lines.append("per test (setup + teardown of each dependency):")
        by_test: dict[str, list[TestCost]] = {}
        for cost in costs:
            by_test.setdefault(cost.nodeid, []).append(cost)
        for nodeid, entries in by_test.items():
            parts = ", ".join(f"{c.dependency} {_duration(c.total)}{_waited(c)}"
                              for c in entries)
            lines.append(f"  {nodeid}: {parts}")
    return lines


def _waited(cost: TestCost) -> str:
    if cost.wait < 0.001:
        return ""
    return f" (of which {_duration(cost.wait)} waiting for its server to start)"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"
