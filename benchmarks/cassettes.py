"""Replaying a recorded suite: depfakes against pytest-recording and plain vcrpy, in one run.

One generated suite, as pytest-recording users write it: ``@pytest.mark.vcr`` tests, a
cassette per test in pytest-recording's layout (``cassettes/<module>/<test>.yaml``), each
about ``--mb`` MB (a paginated listing: the same URL recorded twice with different pages,
then a detail), ``--block-network`` in ``addopts``, requests as the client. Each test walks
the pages and checks every body byte for byte against what was recorded. It runs three
ways, each in its own pytest process:

- ``pytest-recording``: the suite as it is, pytest-recording installed;
- ``vcrpy``: plain vcrpy, an autouse fixture opening the test's cassette by hand;
- ``depfakes``: the same suite with pytest-recording uninstalled and depfakes installed
  (configuration only), on its first run (nothing cached: as on a fresh CI clone) and on
  a later one (the cassettes parsed by an earlier run, kept in ``.pytest_cache``).

Per-test cost is pytest's own setup + call + teardown time for each test (median, first
test dropped: imports); the wall time of the whole process is reported beside it.

    python -m benchmarks.cassettes [--tests 40] [--mb 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.fakes import COLLECTOR, _environ

VARIANTS = ("pytest-recording", "vcrpy", "depfakes, first run", "depfakes")
PAGES = 3  # the same URL answered with pages 1, 2, 3 (recorded in order), then a detail

TEST = '''
import hashlib, json, pytest, requests

EXPECTED = json.loads(open(__file__.replace(".py", ".json")).read())

@pytest.mark.vcr
@pytest.mark.parametrize("n", range(N))
def test_listing(n):
    session = requests.Session()
    seen = []
    for _ in range({pages}):  # a cursor API: the next page comes from the same URL
        seen.append(session.get("https://api.example.com/items").content)
    seen.append(session.get(f"https://api.example.com/items/{{n}}").content)
    assert [hashlib.sha256(body).hexdigest() for body in seen] == EXPECTED[str(n)]
'''

VCRPY_CONFTEST = '''
import os, pytest, vcr

@pytest.fixture(autouse=True)
def _cassette(request):
    name = request.node.name
    path = os.path.join(request.path.parent, "cassettes", "test_bench", name + ".yaml")
    with vcr.use_cassette(path, record_mode="none"):
        yield
'''

INI = "[pytest]\naddopts = --block-network\nmarkers =\n    vcr: a cassette\n"


def _body(test: int, page: int, size: int) -> str:
    """A JSON page of about ``size`` bytes, different for every test and page."""
    item = {"id": 0, "name": f"item of test {test} page {page}", "tags": ["a", "b"],
            "price": 1.10, "description": "x" * 180}
    items: list[dict[str, object]] = []
    while len(items) * 260 < size:
        items.append({**item, "id": len(items)})
    return json.dumps({"page": page, "items": items, "next": f"cursor-{page + 1}"})


def write_suite(root: Path, tests: int, size: int) -> None:
    """The test module, its expected digests, and one cassette per test."""
    import yaml

    cassettes = root / "cassettes" / "test_bench"
    cassettes.mkdir(parents=True)
    expected: dict[str, list[str]] = {}
    for test in range(tests):
        bodies = [_body(test, page, size // (PAGES + 1)) for page in range(1, PAGES + 1)]
        bodies.append(json.dumps({"id": test, "detail": "y" * 200}))
        uris = ["https://api.example.com/items"] * PAGES + [
            f"https://api.example.com/items/{test}"]
        interactions = [{"request": {"body": None, "headers": {"User-Agent": ["bench"]},
                                     "method": "GET", "uri": uri},
                         "response": {"body": {"string": body},
                                      "headers": {"Content-Type": ["application/json"]},
                                      "status": {"code": 200, "message": "OK"}}}
                        for uri, body in zip(uris, bodies, strict=True)]
        (cassettes / f"test_listing[{test}].yaml").write_text(
            yaml.dump({"interactions": interactions, "version": 1},
                      Dumper=getattr(yaml, "CDumper", yaml.Dumper)))
        expected[str(test)] = [hashlib.sha256(b.encode()).hexdigest() for b in bodies]
    (root / "test_bench.json").write_text(json.dumps(expected))
    (root / "test_bench.py").write_text(textwrap.dedent(TEST.format(pages=PAGES)).replace(
        "range(N)", f"range({tests})"))
    (root / "conftest.py").write_text(COLLECTOR)
    (root / "pytest.ini").write_text(INI)


def install_pytest_recording(target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), "pytest-recording>=0.13"], check=True)


def measure(root: Path, variant: str, recording: Path) -> dict[str, float]:
    env = {**_environ(), "BENCH_OUT": str(root / "durations.json")}
    args = ["-p", "no:randomly", "-p", "no:xdist"]
    shutil.rmtree(root / ".pytest_cache", ignore_errors=True)
    if variant == "depfakes":  # what depfakes kept from an earlier run: parsed cassettes
        subprocess.run([sys.executable, "-m", "pytest", "-q", *args, "test_bench.py"],
                       cwd=root, env=env, capture_output=True, check=True)
    if variant == "pytest-recording":
        env["PYTHONPATH"] = str(recording)
        args += ["-p", "no:depfakes"]
    elif variant == "vcrpy":
        args += ["-p", "no:depfakes", "-o", "addopts=", "-p", "vcrpy_conftest"]
        env["PYTHONPATH"] = str(root / "plugins")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", *args, "test_bench.py"],
                          cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    durations = json.loads((root / "durations.json").read_text())
    for warmup in range(2):  # imports, first connections
        durations.pop(f"test_bench.py::test_listing[{warmup}]", None)
    return {"per_test_ms": statistics.median(durations.values()) * 1000, "wall_s": wall}


def run(tests: int, megabytes: float, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="depfakes-bench-cassettes-") as tmp:
        root = Path(tmp) / "suite"
        write_suite(root, tests, int(megabytes * 1_000_000))
        (root / "plugins").mkdir()
        (root / "plugins" / "vcrpy_conftest.py").write_text(VCRPY_CONFTEST)
        recording = Path(tmp) / "pytest-recording"
        install_pytest_recording(recording)
        before = {p: p.read_bytes() for p in (root / "cassettes").rglob("*.yaml")}
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(rounds):  # interleaved, so that a noisy moment hits every variant
            for variant in VARIANTS:
                runs[variant].append(measure(root, variant, recording))
        results = {v: {key: statistics.median(run[key] for run in rows) for key in rows[0]}
                   for v, rows in runs.items()}
        changed = [str(p) for p, data in before.items() if p.read_bytes() != data]
        if changed:
            raise SystemExit(f"cassettes changed by replay: {changed}")
        size = statistics.mean(len(data) for data in before.values())
    return {"tests": tests, "rounds": rounds, "cassette_bytes": int(size), "rows": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=40)
    parser.add_argument("--mb", type=float, default=1.0, help="size of each cassette")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args.tests, args.mb, args.rounds)
    print(f"{args.tests} tests, one {results['cassette_bytes'] / 1e6:.2f} MB cassette each "
          f"({PAGES + 1} interactions), replayed offline; medians of {args.rounds} runs")
    print(f"{'variant':<20}{'per test ms':>14}{'wall s':>10}")
    for variant, row in results["rows"].items():
        print(f"{variant:<20}{row['per_test_ms']:>14.2f}{row['wall_s']:>10.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
