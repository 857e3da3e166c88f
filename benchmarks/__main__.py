"""Every benchmark in one run: a table of depfakes against the naive way, each figure a
ratio measured in the same run, and a plot of per-test overhead by dependency and mode.

    DEPFAKES_POSTGRES_IMAGE=local/postgres:15 DEPFAKES_REDIS_IMAGE=local/redis:7 \\
        python -m benchmarks [--tests 200] [--plot docs/img/overhead.png] [--write-docs]

Runs benchmarks/fakes.py, benchmarks/postgres.py, benchmarks/mongo.py (on SecantusDB unless
DEPFAKES_MONGO_URL names a server), benchmarks/cassettes.py and benchmarks/scale.py as their own
processes (each starts its pytest runs from scratch) and reads their --json results.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _run(module: str, out: Path, *args: str) -> dict[str, Any]:
    print(f"running benchmarks.{module} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", f"benchmarks.{module}", "--json", str(out), *args],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return dict(json.loads(out.read_text()))


def collect(tests: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="depfakes-bench-all-") as tmp:
        return {"fakes": _run("fakes", Path(tmp) / "fakes.json", "--tests", str(tests)),
                "postgres": _run("postgres", Path(tmp) / "postgres.json", "--tests",
                                 str(tests)),
                "mongo": _run("mongo", Path(tmp) / "mongo.json", "--tests", str(tests)),
                "cassettes": _run("cassettes", Path(tmp) / "cassettes.json"),
                "scale": _run("scale", Path(tmp) / "scale.json")}


def rows(results: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(what, depfakes, naive, unit) for the table and the plot."""
    table = [(f"{name}, per test", row["depfakes"], row["naive"], "ms")
             for name, row in results["fakes"].items()]
    pg = results["postgres"]["rows"]
    table += [
        ("postgres database mode vs template clone, per test (ORM writes)",
         pg["depfakes database"]["net_ms"], pg["baseline template-clone"]["net_ms"], "ms"),
        ("postgres database mode vs savepoint fixture, per test",
         pg["depfakes database"]["net_ms"], pg["baseline savepoint"]["net_ms"], "ms"),
        *([("postgres stable URL (the app's engine) vs template clone, per test",
            pg["depfakes db, stable URL"]["net_ms"], pg["baseline template-clone"]["net_ms"],
            "ms")] if "depfakes db, stable URL" in pg else []),
        ("postgres transaction mode vs savepoint fixture, per test",
         pg["depfakes transaction"]["net_ms"], pg["baseline savepoint"]["net_ms"], "ms"),
        ("start to first postgres test vs testcontainers fixture, cold",
         pg["depfakes database"]["start_s"], pg["baseline template-clone"]["start_s"], "s"),
    ]
    mongo = results.get("mongo")
    if mongo:  # runs recorded before the mongo benchmark existed have none
        table += [
            (f"mongo, per test ({mongo['server']}), vs hand-written fixture",
             mongo["depfakes"], mongo["hand-written"], "ms"),
            ("mongo vs mongomock-ng (no server), per test", mongo["depfakes"],
             mongo["mongomock-ng"], "ms"),
        ]
    cassettes = results.get("cassettes")
    if cassettes:  # runs recorded before the cassette benchmark existed have none
        replay = cassettes["rows"]
        size = f"{cassettes['cassette_bytes'] / 1e6:.1f} MB cassettes"
        table += [
            (f"http cassette replay ({size}), first run, vs pytest-recording",
             replay["depfakes, first run"]["per_test_ms"],
             replay["pytest-recording"]["per_test_ms"], "ms"),
            (f"http cassette replay ({size}), first run, vs plain vcrpy",
             replay["depfakes, first run"]["per_test_ms"], replay["vcrpy"]["per_test_ms"],
             "ms"),
            (f"http cassette replay ({size}), later runs, vs pytest-recording",
             replay["depfakes"]["per_test_ms"], replay["pytest-recording"]["per_test_ms"],
             "ms"),
        ]
    scale = results["scale"]
    table += [
        ("start to first postgres test, --deps-reuse vs cold", scale["start"]["reuse_s"],
         scale["start"]["cold_s"], "s"),
        ("400-test suite, -n 2 vs serial", scale["suite"]["n2_s"], scale["suite"]["serial_s"],
         "s"),
        ("two servers: both vs postgres + redis alone", scale["side_by_side"]["both_s"],
         scale["side_by_side"]["postgres_alone_s"] + scale["side_by_side"]["redis_alone_s"],
         "s"),
    ]
    return table


def print_table(table: list[tuple[str, float, float, str]]) -> None:
    print(f"{'':<52}{'depfakes':>12}{'baseline':>12}{'ratio':>9}")
    for what, ours, theirs, unit in table:
        print(f"{what:<52}{ours:>9.2f} {unit:<2}{theirs:>9.2f} {unit:<2}{ours / theirs:>9.3f}")


BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
DOC_PAGES = (ROOT / "README.md", ROOT / "docs" / "performance.md")
RESULTS = ROOT / "docs" / "benchmarks.json"


def markdown_table(table: list[tuple[str, float, float, str]]) -> str:
    lines = ["| measured in one run of `python -m benchmarks` | depfakes | baseline | ratio |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {what} | {ours:.2f} {unit} | {theirs:.2f} {unit} | {ours / theirs:.3f} |"
              for what, ours, theirs, unit in table]
    return "\n".join(lines)


def write_docs(results: dict[str, Any]) -> None:
    """Record the run and put its table into README.md and docs/performance.md."""
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    block = f"{BEGIN}\n{markdown_table(rows(results))}\n{END}"
    for page in DOC_PAGES:
        text = page.read_text()
        start, end = text.index(BEGIN), text.index(END) + len(END)
        page.write_text(text[:start] + block + text[end:])


def plot(table: list[tuple[str, float, float, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_test = [(what.replace(", per test", "").split(", vs ")[0], ours, theirs)
                for what, ours, theirs, unit in table if unit == "ms"]
    labels = [what for what, _, _ in per_test]
    figure, axes = plt.subplots(figsize=(9, 4.5))
    positions = range(len(per_test))
    axes.barh([p + 0.2 for p in positions], [ours for _, ours, _ in per_test], height=0.4,
              label="depfakes", color="#2e7d32")
    axes.barh([p - 0.2 for p in positions], [theirs for _, _, theirs in per_test], height=0.4,
              label="naive / hand-written fixture", color="#9e9e9e")
    axes.set_yticks(list(positions), labels)
    axes.set_xscale("log")
    axes.set_xlabel("per-test overhead, ms (median, log scale)")
    axes.legend(loc="lower right")
    axes.set_title("What a test pays for each dependency")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=200, help="tests per variant")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "overhead.png")
    parser.add_argument("--json", type=Path, help="also write all results here")
    parser.add_argument("--write-docs", action="store_true",
                        help="record the run in docs/benchmarks.json and put its table in "
                             "README.md and docs/performance.md")
    args = parser.parse_args()
    for variable in ("DEPFAKES_POSTGRES_IMAGE", "DEPFAKES_REDIS_IMAGE"):
        if not os.environ.get(variable):
            sys.exit(f"set {variable} (the official images by default need a registry)")
    results = collect(args.tests)
    table = rows(results)
    print_table(table)
    plot(table, args.plot)
    print(f"plot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write_docs:
        write_docs(results)


if __name__ == "__main__":
    main()
