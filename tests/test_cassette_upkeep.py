"""Cassettes over a project's life: parsed once per content across runs, vcrpy's own
cassette features kept (metadata, old tags, record mode 'all'), what no test replays
(`depfakes cassettes check --unused`), how old they are, what a miss says, and suites
written for pytest-vcr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
import yaml

from tests.test_cassettes import HOST, RESOLVER, remote  # noqa: F401 - the fixture

API = "https://api.example.com"


def _interaction(uri: str, body: str, date: datetime | None = None) -> dict:
    headers = {"Content-Type": ["application/json"]}
    if date is not None:
        headers["Date"] = [format_datetime(date, usegmt=True)]
    return {"request": {"body": None, "headers": {}, "method": "GET", "uri": uri},
            "response": {"body": {"string": body}, "headers": headers,
                         "status": {"code": 200, "message": "OK"}}}


def _write(path, interactions, **more) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"interactions": interactions, "version": 1, **more}))


COUNT_PARSES = """
import vcr.serializers.yamlserializer as serializer

_real = serializer.deserialize
PARSES = []

def _counted(text):
    PARSES.append(1)
    return _real(text)

serializer.deserialize = _counted

def pytest_sessionfinish(session):
    print(f"\\nYAML PARSES {len(PARSES)}")
"""


def test_a_cassette_is_parsed_once_per_content_across_runs(project, pytester):
    cassette = pytester.path / "cassettes" / "test_rates" / "test_rate.yaml"
    _write(cassette, [_interaction(f"{API}/rates", '{"USD": 1.1}')])
    project("""
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_rate():
            print("RATE", httpx.get("https://api.example.com/rates").json()["USD"])
    """, conftest=COUNT_PARSES, name="test_rates")
    first = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    first.assert_outcomes(passed=1)
    assert "YAML PARSES 1" in first.stdout.str()
    entries = list((pytester.path / ".pytest_cache").rglob("*.marshal"))
    assert len(entries) == 1

    second = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    second.assert_outcomes(passed=1)
    assert "YAML PARSES 0" in second.stdout.str()  # from the cache
    assert "RATE 1.1" in second.stdout.str()

    # Same size, same mtime, other content: the digest tells them apart.
    stat = cassette.stat()
    cassette.write_text(cassette.read_text().replace("1.1", "2.2"))
    os.utime(cassette, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    changed = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    changed.assert_outcomes(passed=1)
    assert "RATE 2.2" in changed.stdout.str()
    assert "YAML PARSES 1" in changed.stdout.str()
    assert list((pytester.path / ".pytest_cache").rglob("*.marshal")) == entries  # replaced

    entries[0].write_bytes(b"\x00garbage")  # a broken entry: parsed again
    broken = pytester.runpytest_subprocess("-s", "-p", "no:randomly")
    assert "RATE 2.2" in broken.stdout.str()
    assert "YAML PARSES 1" in broken.stdout.str()


def test_a_first_run_parses_the_cassettes_ahead_in_a_process_of_its_own(project, pytester):
    # Twelve cassettes of ~150 KB: more than cassette_cache.WARM_MIN_BYTES together.
    for n in range(12):
        _write(pytester.path / "cassettes" / "test_rates" / f"test_rate[{n}].yaml",
               [_interaction(f"{API}/rates", json.dumps({"n": n, "pad": "x" * 150_000}))])
    project("""
        import pathlib, time, httpx, pytest

        @pytest.mark.deps("http")
        @pytest.mark.parametrize("n", range(12))
        def test_rate(n):
            if n == 0:  # wait for the warmer: every cassette parsed, none by this process
                parsed = pathlib.Path(".pytest_cache/d/depfakes-cassettes/parsed")
                deadline = time.monotonic() + 30
                while len(list(parsed.glob("*.marshal"))) < 12:
                    assert time.monotonic() < deadline, "the cassettes were not parsed ahead"
                    time.sleep(0.05)
            assert httpx.get("https://api.example.com/rates").json()["n"] == n
    """, conftest=COUNT_PARSES, name="test_rates")
    result = pytester.runpytest_subprocess("-s", "-p", "no:randomly", "-p", "no:xdist")
    result.assert_outcomes(passed=12)
    parses = int(result.stdout.str().split("YAML PARSES ")[1].split()[0])
    assert parses <= 1  # the first test's own, unless the warmer was quicker still
    left = {p.name for p in (pytester.path / ".pytest_cache" / "d" / "depfakes-cassettes"
                             ).rglob("*") if p.is_file() and p.suffix != ".marshal"}
    assert not {name for name in left if "warm-list" in name or ".marshal." in name}


def test_a_stopped_warmer_leaves_whole_entries_only(tmp_path):
    from depfakes.cassette_cache import ParseCache, warming

    # 40 cassettes of 2,000 interactions each: seconds of parsing in all.
    cassettes = [tmp_path / "cassettes" / f"test_{n}.yaml" for n in range(40)]
    cassettes[0].parent.mkdir()
    cassettes[0].write_text(yaml.dump({"interactions": [
        _interaction(f"{API}/{n}", "y" * 20) for n in range(2000)], "version": 1},
        Dumper=yaml.CSafeDumper))
    for path in cassettes[1:]:
        path.write_bytes(cassettes[0].read_bytes())
    cache_dir = tmp_path / "parsed"
    with warming(cache_dir, cassettes):
        time.sleep(0.5)  # started, and stopped partway
    assert _processes_naming(cache_dir) == []
    assert all(p.suffix == ".marshal" for p in cache_dir.iterdir())  # no list, no halves
    cache = ParseCache(cache_dir)
    kept = [p for p in cassettes if cache.get(p, p.read_bytes()) is not None]
    expected = yaml.load(cassettes[0].read_text(), Loader=yaml.CSafeLoader)
    assert all(cache.get(path, path.read_bytes()) == expected for path in kept)
    assert len(kept) < len(cassettes)  # it was stopped, not finished


def _processes_naming(directory) -> list[str]:
    found = []
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as fh:
                cmdline = fh.read().decode(errors="replace")
        except OSError:
            continue
        if proc.isdigit() and str(directory) in cmdline:
            found.append(cmdline)
    return found


def test_the_warmer_keeps_valid_cassettes_only_in_the_tests_order(tmp_path):
    from depfakes.cassette_cache import ParseCache, in_test_order, warm

    folder = tmp_path / "cassettes"
    for name in ("other", "test_x[1]", "test_x[0]", "broken", "not_a_cassette"):
        _write(folder / f"{name}.yaml", [_interaction(f"{API}/{name}", name)])
    (folder / "broken.yaml").write_text("interactions: [unclosed")
    (folder / "not_a_cassette.yaml").write_text("just: a mapping\n")
    (folder / "notes.txt").write_text("not yaml")
    order = in_test_order([folder, tmp_path / "missing"], [("test_x[0]",), ("a", "test_x[1]")])
    assert [p.stem for p in order] == ["test_x[0]", "test_x[1]", "broken", "not_a_cassette",
                                       "other"]
    cache = ParseCache(tmp_path / "parsed", background=False)
    warm(cache, order)
    held = {p.stem for p in order if cache.holds(p, p.read_bytes())}
    assert held == {"test_x[0]", "test_x[1]", "other"}  # the broken ones: their tests report


def test_cassette_metadata_replays_and_is_kept(project, pytester, remote, monkeypatch):  # noqa: F811
    """vcrpy 9.4's get_metadata: a value recorded beside the interactions (a seed, a
    clock) replays, and recording more keeps it."""
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    cassette = pytester.path / "cassettes" / "test_meta" / "test_seeded.yaml"
    _write(cassette, [_interaction(f"{API}/rates", '{"USD": 1.1}')], metadata={"seed": 42})
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_seeded(deps):
            assert deps.http.cassette.get_metadata("seed", 7) == 42
            assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
            if os.environ.get("MORE"):
                httpx.get(os.environ["REMOTE_BASE"] + "/more")
    """, conftest=RESOLVER, name="test_meta")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    monkeypatch.setenv("MORE", "1")
    pytester.runpytest_subprocess("--record-mode=new_episodes").assert_outcomes(passed=1)
    saved = yaml.safe_load(cassette.read_text())
    assert saved["metadata"] == {"seed": 42}
    assert len(saved["interactions"]) == 2


def test_old_cassettes_with_python_tags_replay(project, pytester):
    """Cassettes recorded by older vcrpy versions carry !!python/unicode tags, which vcrpy
    still reads; depfakes' check of a cassette reads it as vcrpy does."""
    cassette = pytester.path / "cassettes" / "test_old" / "test_old.yaml"
    cassette.parent.mkdir(parents=True)
    cassette.write_text(textwrap.dedent(f"""\
        interactions:
        - request:
            body: null
            headers: {{}}
            method: !!python/unicode GET
            uri: !!python/unicode {API}/rates
          response:
            body: {{string: !!python/unicode '{{"USD": 1.1}}'}}
            headers: {{}}
            status: {{code: 200, message: OK}}
        version: 1
    """))
    project("""
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_old():
            assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
    """, name="test_old")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_record_mode_all_replaces_what_it_records_again(project, pytester, remote,  # noqa: F811
                                                        monkeypatch):
    """vcrpy's 'all': an interaction recorded again replaces the one it matches (the
    answer of today is replayed next time), the others are kept as they were."""
    port = remote.server_address[1]
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{port}")
    cassette = pytester.path / "cassettes" / "test_all" / "test_refresh.yaml"
    _write(cassette, [_interaction(f"http://{HOST}:{port}/fresh", '{"path": "stale"}'),
                      _interaction(f"http://{HOST}:{port}/kept", '{"path": "kept"}')])
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_refresh():
            assert httpx.get(os.environ["REMOTE_BASE"] + "/fresh").json()["path"] == "/fresh"
    """, conftest=RESOLVER, name="test_all")
    pytester.runpytest_subprocess("--record-mode=all").assert_outcomes(passed=1)
    saved = yaml.safe_load(cassette.read_text())["interactions"]
    assert [i["request"]["uri"].rsplit("/", 1)[1] for i in saved] == ["kept", "fresh"]
    assert "stale" not in cassette.read_text()
    pytester.runpytest_subprocess().assert_outcomes(passed=1)  # replays today's answer


UNUSED_SUITE = """
import httpx, pytest

@pytest.mark.deps("http")
def test_first():
    assert httpx.get("https://api.example.com/one").json() == 1

@pytest.mark.deps("http")
def test_second():
    assert httpx.get("https://api.example.com/two").json() == 2
"""


def _depfakes(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "depfakes.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


@pytest.mark.parametrize("workers", [None, "2"])
def test_check_unused_names_cassettes_and_interactions_no_test_replayed(project, pytester,
                                                                        workers):
    root = pytester.path / "cassettes" / "test_api"
    _write(root / "test_first.yaml", [_interaction(f"{API}/one", "1"),
                                      _interaction(f"{API}/gone", "0")])
    _write(root / "test_second.yaml", [_interaction(f"{API}/two", "2")])
    _write(root / "test_removed.yaml", [_interaction(f"{API}/old", "3")])
    project(UNUSED_SUITE, name="test_api")
    args = ["-n", workers] if workers else []
    pytester.runpytest_subprocess(*args).assert_outcomes(passed=2)

    done = _depfakes("cassettes", "check", "--unused", "cassettes", cwd=pytester.path)
    assert done.returncode == 1, done.stderr
    second = [number for number, line in enumerate(
        (root / "test_first.yaml").read_text().splitlines(), start=1) if line.startswith("- ")][1]
    assert done.stdout.splitlines() == [
        f"cassettes/test_api/test_first.yaml:{second}: unused: interaction 2 was never "
        "replayed in the last run",
        "cassettes/test_api/test_removed.yaml:1: unused: no test read this cassette in the "
        "last run",
    ]
    assert "by the pytest run of" in done.stderr

    # A run of one test is the run reported: the other test's cassette is unused now.
    pytester.runpytest_subprocess("-k", "second").assert_outcomes(passed=1)
    done = _depfakes("cassettes", "check", "--unused", "cassettes", cwd=pytester.path)
    assert "test_first.yaml:1: unused: no test read" in done.stdout
    assert "-k second" in done.stderr


def test_check_unused_without_a_run_says_to_run_the_suite(pytester):
    _write(pytester.path / "cassettes" / "a.yaml", [_interaction(f"{API}/one", "1")])
    done = _depfakes("cassettes", "check", "--unused", cwd=pytester.path)
    assert done.returncode == 1
    assert "no pytest run is noted" in done.stderr


AGED = """
import httpx, pytest

@pytest.mark.deps("http")
def test_rates():
    assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
"""


@pytest.mark.parametrize(("days_old", "outcome"), [(400, "warns"), (10, "quiet"), (None, "quiet")])
def test_a_stale_cassette_warns_naming_the_command_that_re_records_it(project, pytester,
                                                                      days_old, outcome):
    date = datetime.now(timezone.utc) - timedelta(days=days_old) if days_old else None
    _write(pytester.path / "cassettes" / "test_aged" / "test_rates.yaml",
           [_interaction(f"{API}/rates", '{"USD": 1.1}', date)])
    project(AGED, ini="depfakes_cassette_max_age = 90d\n", name="test_aged")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-no-strict")
    result.assert_outcomes(passed=1, warnings=1 if outcome == "warns" else 0)
    if outcome == "warns":
        result.stdout.fnmatch_lines([
            f"*StaleCassetteWarning: depfakes http: cassette *test_rates.yaml is {days_old} "
            "days old (its oldest response is dated *), older than depfakes_cassette_max_age "
            "(90 days). Re-record it against the real API: pytest "
            "'test_aged.py::test_rates' --record-mode=rewrite"])


def test_a_stale_cassette_fails_under_strict_and_a_bad_age_is_refused(project, pytester):
    date = datetime.now(timezone.utc) - timedelta(weeks=20)
    _write(pytester.path / "cassettes" / "test_aged" / "test_rates.yaml",
           [_interaction(f"{API}/rates", '{"USD": 1.1}', date)])
    project(AGED, ini="depfakes_cassette_max_age = 12w\n", name="test_aged")
    strict = pytester.runpytest_subprocess("--deps-strict")
    strict.assert_outcomes(errors=1)
    strict.stdout.fnmatch_lines(["*is 140 days old*older than depfakes_cassette_max_age "
                                 "(84 days)*--record-mode=rewrite"])
    bad = pytester.runpytest_subprocess("--deps-cassette-max-age=3 months")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*expected a duration such as 90d, 12w or 36h, got '3 months'"])


def test_a_request_made_more_often_than_recorded_says_so(project, pytester):
    _write(pytester.path / "cassettes" / "test_again" / "test_twice.yaml",
           [_interaction(f"{API}/rates", '{"USD": 1.1}')])
    project("""
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_twice():
            for _ in range(2):
                httpx.get("https://api.example.com/rates")
    """, name="test_again")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "E * depfakes http: GET https://api.example.com/rates is not in cassette "
        "*test_twice.yaml (record mode 'none').",
        "E * It was recorded once, and each recorded response plays once: the test now makes "
        "it more often.*playback_repeats=True).",
        "E * Record it against the real API with pytest 'test_again.py::test_twice' "
        "--record-mode=new_episodes (never in CI), or stub it with deps.http.mock.",
    ])


def test_a_miss_shows_how_the_closest_request_differs(project, pytester):
    _write(pytester.path / "cassettes" / "test_miss" / "test_page.yaml",
           [_interaction(f"{API}/items?page=1", "[1]")])
    project("""
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_page():
            httpx.get("https://api.example.com/items?page=2")
    """, name="test_miss")
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines([
        f"E * Closest recorded request: GET {API}/items?page=1 (differs in: query)",
        "E *   query: *('page', '2')*('page', '1')*",
    ])


PYTEST_VCR_SUITE = """
import os, httpx, pytest

@pytest.fixture(scope="module")
def vcr_config():
    return {"cassette_library_dir": os.path.join(os.path.dirname(__file__), "fixtures"),
            "serializer": "json"}

@pytest.mark.vcr
def test_rates(vcr_cassette):
    assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
    assert vcr_cassette.play_count == 1

def test_by_hand(vcr):
    with vcr.use_cassette("by_hand"):  # pytest-vcr: <vcr_cassette_dir>/by_hand.yaml
        assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
"""


def test_a_pytest_vcr_suite_with_its_flags_fixtures_and_library_dir(project, pytester):
    """pytest-vcr's vcr_config keys win over its layout (cassette_library_dir), its names
    end in .yaml whatever the serializer, vcr is a VCR and vcr_cassette the cassette, and
    --vcr-record is the record mode."""
    recorded = {"interactions": [_interaction(f"{API}/rates", '{"USD": 1.1}')], "version": 1}
    (pytester.path / "fixtures").mkdir()
    (pytester.path / "fixtures" / "test_rates.yaml").write_text(json.dumps(recorded))
    (pytester.path / "cassettes").mkdir()
    _write(pytester.path / "cassettes" / "by_hand.yaml", recorded["interactions"])
    project(PYTEST_VCR_SUITE, ini="depfakes_cassette_layout = pytest-vcr\n", name="test_pv")
    before = sorted(p.name for p in pytester.path.rglob("*.yaml"))
    pytester.runpytest_subprocess("--vcr-record=none", "-p", "no:randomly").assert_outcomes(
        passed=2)
    assert sorted(p.name for p in pytester.path.rglob("*.yaml")) == before  # nothing added
    bad = pytester.runpytest_subprocess("--vcr-record=sometimes")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_disable_vcr_sends_requests_as_they_are(project, pytester, remote, monkeypatch):  # noqa: F811
    """pytest-vcr's --disable-vcr: the real API answers, no cassette is read or written."""
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    cassette = pytester.path / "cassettes" / "test_live" / "test_live.yaml"
    _write(cassette, [_interaction("http://recorded.example/", '{"path": "recorded"}')])
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_live(deps):
            assert deps.http.cassette is None
            assert httpx.get(os.environ["REMOTE_BASE"] + "/live").json()["path"] == "/live"
    """, conftest=RESOLVER, name="test_live")
    original = cassette.read_bytes()
    pytester.runpytest_subprocess("--disable-vcr").assert_outcomes(passed=1)
    assert cassette.read_bytes() == original
    pytester.runpytest_subprocess().assert_outcomes(failed=1)  # without it: refused
