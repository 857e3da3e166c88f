"""Scale and start-up, in one run:

  * the generated 400-test suite (benchmarks/suite.py: postgres, redis, s3, http) serially
    and with ``-n 2`` (one shared postgres server for both workers);
  * pytest start to the first postgres test: cold (a new container), and with
    ``--deps-reuse`` (adopting the container and template the previous run kept);
  * two servers started side by side: postgres and a real redis (``redis=docker``) each
    alone, then both for one test: the wall time is about the slower one, not the sum.

    DEPFAKES_POSTGRES_IMAGE=local/postgres:15 DEPFAKES_REDIS_IMAGE=local/redis:7 \\
        python -m benchmarks.scale [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import suite

FIRST_TEST_CONFTEST = """
import os, time

def pytest_runtest_call(item):
    path = os.environ["FIRST_CALL_OUT"]
    if not os.path.exists(path):
        with open(path, "w") as fh:
            fh.write(str(time.time()))
"""

ONE_TEST = """
import pytest

@pytest.mark.deps({deps})
def test_first(deps):
    pass
"""
NO_DEPS_TEST = "def test_first():\n    pass\n"

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


def _pytest(directory: Path, *args: str, env: dict[str, str] | None = None
            ) -> tuple[float, str]:
    """Run pytest in ``directory``; (wall seconds, output)."""
    began = time.perf_counter()
    done = subprocess.run([*PYTEST, *args], cwd=directory, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"pytest {' '.join(args)} failed in {directory}:\n{done.stdout}{done.stderr}")
    return wall, done.stdout


def suite_wall_times(tmp: Path) -> dict[str, float]:
    directory = tmp / "suite"
    count = suite.write(directory)
    serial, _ = _pytest(directory, "-p", "no:xdist")
    parallel, _ = _pytest(directory, "-n", "2")
    return {"tests": count, "serial_s": serial, "n2_s": parallel}


def first_test(directory: Path, deps: str, *args: str) -> tuple[float, str]:
    """Seconds from launching pytest to the first test's body, and pytest's output."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "conftest.py").write_text(FIRST_TEST_CONFTEST)
    (directory / "test_first.py").write_text(ONE_TEST.format(deps=deps) if deps
                                             else NO_DEPS_TEST)
    out = directory / "first-call"
    out.unlink(missing_ok=True)
    launched = time.time()
    _, output = _pytest(directory, "-p", "no:xdist", *args, env={"FIRST_CALL_OUT": str(out)})
    return float(out.read_text()) - launched, output


def start_times(tmp: Path) -> dict[str, float]:
    docker = ("--deps-backend", "postgres=docker")
    cold, _ = first_test(tmp / "cold", '"postgres"', *docker)
    first_first_test = tmp / "reuse"
    kept, _ = first_test(first_first_test, '"postgres"', *docker, "--deps-reuse")
    reused, _ = first_test(first_first_test, '"postgres"', *docker, "--deps-reuse")
    return {"cold_s": cold, "reuse_first_s": kept, "reuse_s": reused}


def side_by_side(tmp: Path) -> dict[str, float]:
    """Start to first test minus a plain pytest's: what waiting for the servers costs."""
    backends = ("--deps-backend", "postgres=docker", "--deps-backend", "redis=docker")
    plain, _ = first_test(tmp / "plain", "")
    postgres, _ = first_test(tmp / "pg", '"postgres"', *backends)
    redis, _ = first_test(tmp / "redis", '"redis"', *backends)
    both, output = first_test(tmp / "both", '"postgres", "redis"', *backends)
    # Each server's own start time in that run, from depfakes' summary.
    starts = {name: float(ms) / 1000 for name, ms in
              re.findall(r"^(postgres|redis) .* setup +([\d.]+) ms", output, re.M)}
    return {"plain_pytest_s": plain, "postgres_alone_s": postgres - plain,
            "redis_alone_s": redis - plain, "both_s": both - plain,
            "both_postgres_start_s": starts["postgres"], "both_redis_start_s": starts["redis"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for variable in ("DEPFAKES_POSTGRES_IMAGE", "DEPFAKES_REDIS_IMAGE"):
        if not os.environ.get(variable):
            sys.exit(f"set {variable} (the official images by default need a registry)")
    try:
        with tempfile.TemporaryDirectory(prefix="depfakes-scale-") as name:
            tmp = Path(name)
            results = {"suite": suite_wall_times(tmp), "start": start_times(tmp),
                       "side_by_side": side_by_side(tmp)}
    finally:  # the reuse runs kept a server on purpose
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                       capture_output=True, check=False)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def print_table(results: dict[str, dict[str, float]]) -> None:
    s, st, b = results["suite"], results["start"], results["side_by_side"]
    print(f"generated suite, {s['tests']:.0f} tests    serial {s['serial_s']:.1f} s   "
          f"-n 2 {s['n2_s']:.1f} s   ratio {s['n2_s'] / s['serial_s']:.2f}")
    print(f"start to first postgres test    cold {st['cold_s']:.2f} s   "
          f"--deps-reuse {st['reuse_s']:.2f} s (run that kept it: {st['reuse_first_s']:.2f} s)"
          f"   ratio {st['reuse_s'] / st['cold_s']:.2f}")
    alone = b["postgres_alone_s"] + b["redis_alone_s"]
    starts = b["both_postgres_start_s"] + b["both_redis_start_s"]
    print(f"two servers side by side       postgres alone {b['postgres_alone_s']:.2f} s   "
          f"redis alone {b['redis_alone_s']:.2f} s   both {b['both_s']:.2f} s   "
          f"(sum alone {alone:.2f} s; times after a plain pytest start of "
          f"{b['plain_pytest_s']:.2f} s)")
    print(f"  in the run with both         postgres started in {b['both_postgres_start_s']:.2f} s"
          f", redis in {b['both_redis_start_s']:.2f} s: sum {starts:.2f} s, "
          f"waited {b['both_s']:.2f} s (ratio {b['both_s'] / starts:.2f})")


if __name__ == "__main__":
    main()
