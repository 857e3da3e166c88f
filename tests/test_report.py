"""What the terminal says about servers: a live status while a test waits for one, one
line per server when it is ready, the slowest setups, and --deps-report per test."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

SLOW_PROVIDER = """
import time
import depfakes
from depfakes.providers.base import Provider

class SlowProvider(Provider):
    name = "slow"
    handle_type = object

    def start(self, ctx):
        ctx.status("warming up")
        time.sleep(1.5)
        self.description = "slow server on port 1234"

    def acquire(self, item, options):
        return object()

depfakes.register(SlowProvider)
"""

TESTS = """
import pytest

@pytest.mark.deps("slow")
@pytest.mark.parametrize("n", range(3))
def test_uses_it(deps, n):
    pass

def test_needs_nothing():
    pass
"""


def test_one_ready_line_per_server_and_no_status_outside_a_terminal(project, pytester):
    project(TESTS, conftest=SLOW_PROVIDER)
    for args in ([], ["-q"]):
        result = pytester.runpytest_subprocess("-p", "no:randomly", *args)
        result.assert_outcomes(passed=4)
        output = result.stdout.str()
        assert output.count("depfakes: slow ready in 1.") == 1, output
        assert "slow server on port 1234" in output
        assert "warming up" not in output  # no live status in a log file


def test_live_status_on_a_terminal(project, pytester):
    project(TESTS, conftest=SLOW_PROVIDER)
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:randomly"],
                               cwd=pytester.path, stdout=terminal, stderr=terminal,
                               env={**os.environ, "COLUMNS": "120"})
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(timeout=60) == 0
    output = b"".join(chunks).decode(errors="replace")
    assert "depfakes: slow: warming up" in output  # the live line, rewritten in place
    assert output.count("depfakes: slow ready in") == 1


def test_report_per_test_and_slowest_setups(project, pytester):
    project(TESTS, conftest=SLOW_PROVIDER)
    plain = pytester.runpytest_subprocess("-p", "no:randomly")
    plain.stdout.fnmatch_lines(["slowest setups:",
                                "*s  slow * test_project.py::test_uses_it[[]0[]] (of which "
                                "*s waiting for its server to start)"])
    assert "per test" not in plain.stdout.str()
    report = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-report")
    report.stdout.fnmatch_lines(["per test (setup + teardown of each dependency):",
                                 "  test_project.py::test_uses_it[[]0[]]: slow *waiting*",
                                 "  test_project.py::test_uses_it[[]1[]]: slow * ms",
                                 "  test_project.py::test_uses_it[[]2[]]: slow * ms"])
    assert "test_needs_nothing:" not in report.stdout.str()


def test_summary_covers_every_xdist_worker(project, pytester):
    project(TESTS.replace("range(3)", "range(6)"), conftest=SLOW_PROVIDER)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:randomly", "--deps-report")
    result.assert_outcomes(passed=7)
    result.stdout.fnmatch_lines(["slow * 6 tests *setup  1[45]??.? ms*"])
    for n in range(6):
        assert f"test_uses_it[{n}]: slow" in result.stdout.str()
