"""Suites written for pytest-recording: its flags, rewrite mode and block_network marker
when it is gone, and pytest still starting (one owner per flag) when it is installed too."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.test_cassettes import HOST, RESOLVER, remote  # noqa: F401 - the fixture


@pytest.fixture(scope="module")
def pytest_recording_dir(tmp_path_factory):
    """pytest-recording installed where only the test projects' pytest sees it."""
    target = tmp_path_factory.mktemp("pytest-recording")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), "pytest-recording>=0.13"], check=True)
    return target


VCR_AND_DEPS = """
import os
import httpx
import pytest

BASE = os.environ["REMOTE_BASE"]

@pytest.mark.vcr
def test_pytest_recording_records():
    assert httpx.get(BASE + "/theirs").json()["path"] == "/theirs"

@pytest.mark.deps("http")
def test_depfakes_records():
    assert httpx.get(BASE + "/ours").json()["path"] == "/ours"
"""


# Plugins load in the order their distributions are found: both orders happen.
@pytest.mark.parametrize("first", [[], ["-p", "depfakes"]], ids=["theirs", "ours"])
def test_with_pytest_recording_installed_too_each_plugin_owns_its_flags(
        project, pytester, remote, monkeypatch, pytest_recording_dir, first):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", str(pytest_recording_dir))
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    project(VCR_AND_DEPS, conftest=RESOLVER, name="test_both")
    result = pytester.runpytest_subprocess(*first, "--record-mode=once",
                                           "--deps-record-mode=once", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert "recording" in result.stdout.str()  # pytest-recording was loaded
    theirs = pytester.path / "cassettes" / "test_both" / "test_pytest_recording_records.yaml"
    ours = pytester.path / "cassettes" / "test_both" / "test_depfakes_records.yaml"
    assert "/theirs" in theirs.read_text()  # pytest-recording's layout, its --record-mode
    assert "/ours" in ours.read_text()  # depfakes', through --deps-record-mode
    help_text = pytester.runpytest_subprocess(*first, "--help").stdout.str()
    assert "--deps-block-network" in help_text
    assert "Block network access except for VCR recording" in help_text  # theirs


def test_pytest_recording_flags_and_marker_without_it(project, pytester, remote):  # noqa: F811
    port = remote.server_address[1]
    project(f"""
        import httpx, pytest

        def test_allowed_host():
            assert httpx.get("http://{HOST}:{port}/ok").json()["path"] == "/ok"

        def test_other_host_is_refused():
            with pytest.raises(httpx.ConnectError, match="network access to other.depfakes.test"):
                httpx.get("http://other.depfakes.test:{port}/")
    """, conftest=RESOLVER.replace(f"name == {HOST!r}",
                                   f"name in ({HOST!r}, 'other.depfakes.test')"),
        ini=f"addopts = --block-network --allowed-hosts=example.invalid,{HOST}")
    pytester.runpytest_subprocess().assert_outcomes(passed=2)

    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    pytester.makepyfile(test_project=f"""
        import httpx, pytest

        @pytest.mark.block_network(allowed_hosts=["{HOST}"])
        def test_marked():
            assert httpx.get("http://{HOST}:{port}/ok").status_code == 200
            with pytest.raises(httpx.ConnectError, match="@pytest.mark.block_network"):
                httpx.get("http://other.depfakes.test:{port}/")

        def test_unmarked_reaches_anything():
            assert httpx.get("http://other.depfakes.test:{port}/x").status_code == 200
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_rewrite_records_afresh_and_keeps_the_cassette_if_nothing_was_recorded(
        project, pytester, remote, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    source = """
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_api():
            if os.environ.get("FAIL_FIRST"):
                raise RuntimeError("failed before any request")
            assert httpx.get(os.environ["REMOTE_BASE"] + "/PATH").status_code == 200
    """
    project(source.replace("PATH", "first"), conftest=RESOLVER, name="test_api")
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    cassette = pytester.path / "cassettes" / "test_api" / "test_api.yaml"
    assert "/first" in cassette.read_text()

    pytester.makepyfile(test_api=textwrap.dedent(source.replace("PATH", "second")))
    monkeypatch.setenv("FAIL_FIRST", "1")
    pytester.runpytest_subprocess("--record-mode=rewrite").assert_outcomes(failed=1)
    assert "/first" in cassette.read_text()  # nothing recorded: nothing lost
    monkeypatch.delenv("FAIL_FIRST")
    pytester.runpytest_subprocess("--record-mode=rewrite").assert_outcomes(passed=1)
    recorded = cassette.read_text()
    assert "/second" in recorded
    assert "/first" not in recorded  # rewritten, not appended (new_episodes would keep it)


SUITE = """
import os
import httpx
import pytest

BASE = os.environ["REMOTE_BASE"]

@pytest.fixture(scope="module")
def vcr_config():
    return {"filter_headers": ["x-tenant"], "match_on": ["method", "path", "tenantless"]}

@pytest.mark.vcr
def test_plain(vcr):
    body = httpx.get(BASE + "/plain", headers={"X-Tenant": "t1"}).json()
    assert body["path"] == "/plain"
    assert vcr is not None

class TestPages:
    @pytest.mark.vcr
    @pytest.mark.parametrize("n", [1, 2])
    def test_page(self, n):
        assert httpx.get(f"{BASE}/page/{n}?q=a b").json()["path"] == f"/page/{n}"

@pytest.mark.vcr
def test_shared():
    assert httpx.get(BASE + "/shared").json()["path"] == "/shared"
"""

EXTRA = """
@pytest.mark.vcr("shared.yaml")
def test_with_an_extra_cassette():
    assert httpx.get(BASE + "/shared").json()["path"] == "/shared"
"""

CONFTEST = RESOLVER + """
def pytest_recording_configure(config, vcr):
    vcr.register_matcher("tenantless", lambda r1, r2: r1.query == r2.query)
"""


def test_a_pytest_recording_suite_replays_its_cassettes_where_they_are(
        project, pytester, remote, monkeypatch, pytest_recording_dir):  # noqa: F811
    """Recorded by pytest-recording itself; then replayed with it uninstalled, by depfakes,
    configuration unchanged: same files, byte for byte, same answers."""
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    pytester.makepyfile(**{"tests/test_suite": SUITE})
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = --strict-markers --block-network\n"
                     "markers =\n    vcr: pytest-recording\n")
    monkeypatch.setenv("PYTHONPATH", str(pytest_recording_dir))
    recorded = pytester.runpytest_subprocess("--record-mode=once", "-p", "no:randomly")
    recorded.assert_outcomes(passed=4)
    directory = pytester.path / "tests" / "cassettes" / "test_suite"
    (directory / "test_shared.yaml").rename(directory / "shared.yaml")
    pytester.makepyfile(**{"tests/test_suite": SUITE.split("@pytest.mark.vcr\ndef test_shared")[0]
                           + EXTRA})
    theirs = pytester.runpytest_subprocess("-p", "no:randomly")  # pytest-recording replays
    theirs.assert_outcomes(passed=4)
    cassettes = {p: p.read_bytes() for p in sorted(directory.glob("*.yaml"))}
    assert sorted(p.name for p in cassettes) == [
        "TestPages.test_page[1].yaml", "TestPages.test_page[2].yaml", "shared.yaml",
        "test_plain.yaml"]

    remote.shutdown()
    remote.server_close()
    monkeypatch.delenv("PYTHONPATH")  # pytest-recording uninstalled
    replayed = pytester.runpytest_subprocess("-p", "no:randomly")
    replayed.assert_outcomes(passed=4)
    assert "recording-" not in replayed.stdout.str()
    assert {p: p.read_bytes() for p in cassettes} == cassettes  # not one byte changed
    assert sorted(directory.glob("*.yaml")) == list(cassettes)  # and no file added


def test_pytest_vcr_layout_by_configuration(project, pytester, remote, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    pytester.makeconftest(RESOLVER)
    pytester.makeini("[pytest]\ndepfakes_cassette_layout = pytest-vcr\n")
    pytester.makepyfile(**{"tests/test_api": """
        import os, httpx, pytest

        class TestApi:
            @pytest.mark.vcr
            def test_get(self):
                assert httpx.get(os.environ["REMOTE_BASE"] + "/v").status_code == 200
    """})
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    assert (pytester.path / "tests" / "cassettes" / "TestApi.test_get.yaml").exists()


def test_with_pytest_vcr_installed_its_marker_and_fixtures_stay_its_own(
        project, pytester, remote, monkeypatch, tmp_path):  # noqa: F811
    target = tmp_path / "pytest-vcr"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), "pytest-vcr>=1.0"], check=True)
    monkeypatch.setenv("PYTHONPATH", str(target))
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    project(VCR_AND_DEPS.replace("def test_pytest_recording_records():",
                                 "def test_pytest_recording_records(vcr):\n"
                                 "    assert hasattr(vcr, 'use_cassette')  # pytest-vcr's VCR"),
            conftest=RESOLVER, name="test_both")
    result = pytester.runpytest_subprocess("--vcr-record=once", "--record-mode=once",
                                           "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "cassettes" / "test_pytest_recording_records.yaml").exists()
    assert (pytester.path / "cassettes" / "test_both" / "test_depfakes_records.yaml").exists()
