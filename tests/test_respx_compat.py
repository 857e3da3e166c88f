"""Suites written for respx keep respx's meaning with depfakes installed: its respx_mock
fixture and respx marker (respx's plugin), now answering httpx2 too and under the
network policy; renamed copies of them (the OpenAI SDK's respx2_mock / respx2) by
configuration."""

from __future__ import annotations

import pytest

pytest.importorskip("httpx2")

RESPX_SUITE = """
import httpx, httpx2, pytest, requests

@pytest.mark.respx(base_url="https://api.example.com")
def test_relative_routes_on_httpx_and_httpx2(respx_mock):
    respx_mock.get("/rates").respond(json={"USD": 1.1})
    assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
    assert httpx2.get("https://api.example.com/rates").json() == {"USD": 1.1}

@pytest.mark.respx(assert_all_called=True)
def test_an_uncalled_route_fails_as_in_respx(respx_mock):
    respx_mock.get("https://api.example.com/never").respond(200)

@pytest.mark.respx(assert_all_called=False)
def test_unmatched_loopback_is_not_mocked_as_in_respx(respx_mock, deps):
    deps.http.server.expect_request("/real").respond_with_data("real")
    with pytest.raises(AssertionError, match="not mocked"):
        httpx.get(deps.http.server.url_for("/real"))
    with pytest.raises(AssertionError, match="not mocked"):
        httpx2.get(deps.http.server.url_for("/real"))
    respx_mock.route(host="127.0.0.1").pass_through()
    assert httpx2.get(deps.http.server.url_for("/real")).text == "real"

def test_a_real_leak_is_refused_and_named(respx_mock):
    respx_mock.get("https://api.example.com/rates").respond(200)
    httpx.get("https://api.example.com/rates")
    with pytest.raises(requests.ConnectionError, match="network access to "
                       "api.example.com:443 is refused"):
        requests.get("https://api.example.com/rates", timeout=5)  # not httpx: not mocked

@pytest.mark.deps("http")
def test_loopback_still_reaches_the_local_server_without_respx_mock(deps):
    deps.http.server.expect_request("/ping").respond_with_data("pong")
    assert httpx2.get(deps.http.server.url_for("/ping")).text == "pong"
"""


def test_a_respx_suite_keeps_respx_meaning(project, pytester):
    project(RESPX_SUITE, name="test_respx")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-rf")
    result.assert_outcomes(passed=5, errors=1)  # as with respx alone
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_an_uncalled_route_fails_as_in_*",
                                 "*RESPX: some routes were not called*"])


ALIASED = """
import httpx2, pytest

@pytest.mark.respx2(base_url="http://127.0.0.1:4010")
def test_renamed_fixture_and_marker(respx2_mock):
    respx2_mock.post("/chat").mock(return_value=httpx2.Response(200, json={"ok": True}))
    assert httpx2.post("http://127.0.0.1:4010/chat").json() == {"ok": True}

@pytest.mark.respx2(base_url="http://127.0.0.1:4010")
def test_renamed_unmatched_loopback_is_not_mocked(respx2_mock):
    respx2_mock.get("/a").respond(200)
    with pytest.raises(AssertionError, match="not mocked"):
        httpx2.get("http://127.0.0.1:4010/b")
    httpx2.get("http://127.0.0.1:4010/a")
"""


def test_renamed_respx_fixtures_by_configuration(project, pytester):
    project(ALIASED, ini="depfakes_respx_aliases = respx2_mock:respx2\n", name="test_aliased")
    pytester.runpytest_subprocess("-p", "no:randomly", "--strict-markers").assert_outcomes(
        passed=2)
    pytester.makeini("[pytest]\ndepfakes_respx_aliases = respx2_mock\n")
    bad = pytester.runpytest_subprocess()
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*depfakes_respx_aliases: expected FIXTURE:MARKER (e.g. "
                              "respx2_mock:respx2), got 'respx2_mock'"])


def test_respx_mock_tests_run_as_they_did_where_http_cannot(project, pytester):
    """respx installed without the rest of depfakes' http extra (a project using depfakes
    for its databases only): its respx_mock tests do not turn into http tests."""
    project("""
        import httpx

        def test_plain_respx(respx_mock):
            respx_mock.get("https://api.example.com/rates").respond(json={"USD": 1.1})
            assert httpx.get("https://api.example.com/rates").json() == {"USD": 1.1}
    """, conftest="import sys\nsys.modules['vcr'] = None  # vcrpy not installed\n",
            name="test_plain")
    result = pytester.runpytest_subprocess("--deps-strict")
    result.assert_outcomes(passed=1)
