"""An app as it is (examples/fastapi) on depfakes, next to the same suite on one shared
database, in one run: whole pytest processes, wall time, medians of ``--rounds``.

* shared database: what the project's own CI does: a server already running (started
  before the timing), then ``alembic upgrade head``, ``python -m app.initial_data`` and
  ``pytest -p no:depfakes`` against it; a new database each round. Under ``-n 2`` the suite
  shares that database between workers, and fails.
* depfakes, cold: ``pytest`` (a new container, the template migrated, the stable URL).
* depfakes, --deps-reuse: ``pytest --deps-reuse`` after a first run kept the container and
  the template.
Each depfakes variant also runs under ``-n 2``.

    DEPFAKES_POSTGRES_IMAGE=local/postgres:15 python -m benchmarks.apps [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "fastapi"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - began, done.stdout + done.stderr


def outcome(output: str) -> str:
    found = re.findall(r"(\d+ (?:passed|failed|errors?))", output)
    return ", ".join(found) or output[-300:]


def shared_database(project: Path, image: str, rounds: int) -> dict[str, Any]:
    password = secrets.token_hex(8)
    name = f"depfakes-bench-shared-{os.getpid()}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "-e",
                    f"POSTGRES_PASSWORD={password}", "-p", "127.0.0.1::5432", "--tmpfs",
                    "/var/lib/postgresql/data", image, "postgres", "-c", "fsync=off", "-c",
                    "synchronous_commit=off"], check=True, capture_output=True)
    try:
        port = subprocess.run(["docker", "port", name, "5432/tcp"], check=True,
                              capture_output=True, text=True).stdout.split(":")[-1].strip()
        env = {**os.environ, "POSTGRES_SERVER": "127.0.0.1", "POSTGRES_PORT": port,
               "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": password}
        _wait_ready(name)
        serial: list[float] = []
        parallel: list[float] = []
        outcomes: dict[int, list[str]] = {0: [], 2: []}
        for round_ in range(rounds):
            for workers, times in ((0, serial), (2, parallel)):
                database = f"app_{round_}_{workers}"
                subprocess.run(["docker", "exec", name, "createdb", "-U", "postgres", database],
                               check=True, capture_output=True)
                run_env = {**env, "POSTGRES_DB": database}
                began = time.perf_counter()
                for step in ([sys.executable, "-m", "alembic", "upgrade", "head"],
                             [sys.executable, "-m", "app.initial_data"]):
                    subprocess.run(step, cwd=project, env=run_env, check=True,
                                   capture_output=True)
                _, output = timed([*PYTEST, "-p", "no:depfakes", "-W",
                                   "ignore::pytest.PytestConfigWarning",
                                   *(["-n", "2"] if workers else [])], project, run_env)
                times.append(time.perf_counter() - began)
                outcomes[workers].append(outcome(output))
        return {"serial_s": statistics.median(serial), "n2_s": statistics.median(parallel),
                "serial_outcome": " / ".join(outcomes[0]),
                "n2_outcome": " / ".join(outcomes[2])}
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _wait_ready(name: str) -> None:
    for _ in range(120):
        if subprocess.run(["docker", "exec", name, "pg_isready", "-U", "postgres", "-h",
                           "127.0.0.1"], capture_output=True).returncode == 0:
            return
        time.sleep(0.25)
    raise RuntimeError("the shared server did not start")


def depfakes(project: Path, rounds: int, reuse: bool) -> dict[str, Any]:
    env = {**os.environ, "TESTCONTAINERS_RYUK_DISABLED": "true"}
    flags = ["--deps-reuse"] if reuse else []
    result: dict[str, Any] = {}
    for workers in (0, 2):
        extra = [*flags, *(["-n", "2"] if workers else [])]
        if reuse:
            timed([*PYTEST, *extra], project, env)  # keeps the server and the template
        times, outcomes = [], []
        for _ in range(rounds):
            seconds, output = timed([*PYTEST, *extra], project, env)
            times.append(seconds)
            outcomes.append(outcome(output))
        key = "n2" if workers else "serial"
        result[f"{key}_s"] = statistics.median(times)
        result[f"{key}_outcome"] = " / ".join(outcomes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image = os.environ.get("DEPFAKES_POSTGRES_IMAGE")
    if not image:
        sys.exit("set DEPFAKES_POSTGRES_IMAGE (e.g. postgres:17-alpine or local/postgres:15)")
    with tempfile.TemporaryDirectory(prefix="depfakes-appbench-") as tmp:
        project = Path(tmp) / "app"
        shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__"))
        try:
            rows = {"shared database": shared_database(project, image, args.rounds),
                    "depfakes, cold": depfakes(project, args.rounds, reuse=False),
                    "depfakes, --deps-reuse": depfakes(project, args.rounds, reuse=True)}
        finally:
            subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--all"],
                           capture_output=True, check=False)
    print(f"examples/fastapi: whole runs, median of {args.rounds} (image {image})")
    for name, row in rows.items():
        print(f"{name:<24} serial {row['serial_s']:6.2f} s ({row['serial_outcome']})")
        print(f"{'':<24} -n 2   {row['n2_s']:6.2f} s ({row['n2_outcome']})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
