"""A 400-test suite over postgres, redis, s3 and http gives the same result per test run
serially, with -n 2 and in shuffled orders: no state crosses tests, workers or orders."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from test_postgres import IMAGE

from benchmarks import suite
from tests.servers import docker_ok as _docker_ok
from tests.servers import need as _need


def _outcomes(junit: Path) -> dict[str, str]:
    results = {}
    for case in ET.parse(junit).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        name = f"{case.get('classname')}::{case.get('name')}"
        results[name] = kinds[0] if kinds else "passed"
    return results


def test_large_suite_same_results_serial_parallel_and_shuffled(pytester, monkeypatch):
    _need(_docker_ok() and IMAGE is not None, "a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    total = suite.write(pytester.path)
    assert total >= 400
    runs = {"serial": ([], None), "-n 2, shuffled": (["-n", "2"], "11"),
            "serial, shuffled": ([], "12")}
    outcomes = {}
    for label, (args, seed) in runs.items():
        if seed is None:
            monkeypatch.delenv("SUITE_SEED", raising=False)
        else:
            monkeypatch.setenv("SUITE_SEED", seed)
        junit = pytester.path / f"{label.replace(' ', '_')}.xml"
        result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider",
                                               f"--junitxml={junit}", *args)
        result.assert_outcomes(passed=total - 2, skipped=1, xfailed=1)
        outcomes[label] = _outcomes(junit)
    assert len(outcomes["serial"]) == total
    assert outcomes["-n 2, shuffled"] == outcomes["serial"]
    assert outcomes["serial, shuffled"] == outcomes["serial"]
    # The shuffles did reorder the suite (so a leak into the next test would have shown).
    order = list(outcomes["serial"])
    assert list(outcomes["serial, shuffled"]) != order
