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

from benchmarks import postgres, suite

ONE_TEST = """
import pytest

@pytest.mark.deps({deps})
def test_first(deps):
    pass
"""
NO_DEPS_TEST = "def test_first():\n    pass\n"

def suite_wall_time(directory: Path, *args: str) -> float:
    """Seconds one pytest run of the generated suite in ``directory`` takes."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", *args], cwd=directory, capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"pytest {' '.join(args)} failed in {directory}:\n{done.stdout}{done.stderr}")
    return time.perf_counter() - began


def suite_wall_times(tmp: Path) -> dict[str, float]:
    directory = tmp / "suite"
    count = suite.write(directory)
    return {"tests": count, "serial_s": suite_wall_time(directory, "-p", "no:xdist"),
            "n2_s": suite_wall_time(directory, "-n", "2")}


def first_test(directory: Path, deps: str, backend: str, reuse: bool = False
               ) -> tuple[float, str]:
    """Seconds from launching pytest to the first test's body, and pytest's output."""
    source = ONE_TEST.format(deps=deps) if deps else NO_DEPS_TEST
    result = postgres.run("", source, 1, directory, backend=backend, reuse=reuse)
    return result["start"], result["output"]


def start_times(tmp: Path) -> dict[str, float]:
    cold, _ = first_test(tmp / "cold", '"postgres"', "postgres=docker")
    kept, _ = first_test(tmp / "reuse", '"postgres"', "postgres=docker", reuse=True)
    reused, _ = first_test(tmp / "reuse", '"postgres"', "postgres=docker", reuse=True)
    return {"cold_s": cold, "reuse_first_s": kept, "reuse_s": reused}


def side_by_side(tmp: Path) -> dict[str, float]:
    """Start to first test minus a plain pytest's: what waiting for the servers costs."""
    backends = "postgres=docker,redis=docker"
    plain, _ = first_test(tmp / "plain", "", "")
    alone_pg, _ = first_test(tmp / "pg", '"postgres"', backends)
    alone_redis, _ = first_test(tmp / "redis", '"redis"', backends)
    both, output = first_test(tmp / "both", '"postgres", "redis"', backends)
    # Each server's own start time in that run, from depfakes' summary.
    starts = {name: float(ms) / 1000 for name, ms in
              re.findall(r"^(postgres|redis) .* setup +([\d.]+) ms", output, re.M)}
    return {"plain_pytest_s": plain, "postgres_alone_s": alone_pg - plain,
            "redis_alone_s": alone_redis - plain, "both_s": both - plain,
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
