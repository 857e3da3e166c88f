"""http: respx router per test; local server whose surprises fail the test."""

from __future__ import annotations


def test_routes_are_per_test_and_loopback_passes_through(project, pytester):
    project(
        """
        import httpx
        import pytest

        @pytest.mark.deps("http")
        def test_stub(deps):
            route = deps.http.mock.get("https://api.example.com/users/1").respond(
                200, json={"id": 1})
            assert httpx.get("https://api.example.com/users/1").json() == {"id": 1}
            assert route.call_count == 1

        @pytest.mark.deps("http")
        def test_previous_routes_are_gone(deps):
            assert len(deps.http.mock.routes) == 0
            with pytest.raises(AssertionError, match="GET https://api.example.com/users/1 "
                               "matched no route"):
                httpx.get("https://api.example.com/users/1")

        @pytest.mark.deps("http")
        def test_local_server(deps):
            deps.http.server.expect_request("/ping").respond_with_json({"pong": True})
            assert httpx.get(deps.http.server.url_for("/ping")).json() == {"pong": True}

        @pytest.mark.deps("http")
        def test_server_is_cleared_between_tests(deps):
            assert deps.http.server.log == []
            assert len(deps.http.server.handlers) == 0

        @pytest.mark.deps("http")
        async def test_async_client(deps):
            deps.http.mock.post("https://api.example.com/items").respond(201)
            async with httpx.AsyncClient() as client:
                assert (await client.post("https://api.example.com/items")).status_code == 201

        @pytest.mark.deps("http", base_url="https://api.example.com")
        def test_base_url(deps):
            deps.http.mock.get("/v2/health").respond(204)
            assert httpx.get("https://api.example.com/v2/health").status_code == 204
        """,
        conftest="""
        import asyncio, inspect, pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_pyfunc_call(pyfuncitem):
            if inspect.iscoroutinefunction(pyfuncitem.obj):
                args = {n: pyfuncitem.funcargs[n] for n in pyfuncitem._fixtureinfo.argnames}
                asyncio.run(pyfuncitem.obj(**args))
                return True
        """,
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=6)


def test_unmatched_request_error_names_method_and_url(project, pytester):
    project(
        """
        import httpx
        import pytest

        @pytest.mark.deps("http")
        def test_it(deps):
            httpx.delete("https://api.example.com/users/7?force=1")
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "E *UnmatchedRequest: depfakes http: DELETE https://api.example.com/users/7?force=1 "
        "matched no route of deps.http.mock. Stub it, e.g. deps.http.mock.delete(*"
    ])


def test_a_refused_request_a_route_is_for_says_why_the_route_did_not_answer(project,
                                                                            pytester):
    project(
        """
        import socket
        import httpx2, pytest, requests

        class OwnTransport(httpx2.BaseTransport):  # its own sockets: respx never sees it
            def handle_request(self, request):
                socket.create_connection((request.url.host, 443), timeout=1)

        @pytest.mark.deps("http")
        def test_requests(deps):
            deps.http.mock.get("https://api.example.com/rates").respond(json={})
            with pytest.raises(requests.ConnectionError) as raised:
                requests.get("https://api.example.com/rates")
            print("REQUESTS:", raised.value)

        @pytest.mark.deps("http")
        def test_own_transport(deps):
            deps.http.mock.route(host="api.example.com").respond(json={})
            with pytest.raises(OSError) as raised:
                httpx2.Client(transport=OwnTransport()).get("https://api.example.com/rates")
            print("OWN:", raised.value)

        @pytest.mark.deps("http")
        def test_other_host(deps):
            deps.http.mock.get("https://api.example.com/rates").respond(json={})
            with pytest.raises(requests.ConnectionError) as raised:
                requests.get("https://other.example.com/")
            print("OTHER:", raised.value)
        """
    )
    result = pytester.runpytest("-s", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    requests_line = _printed(out, "REQUESTS:")
    assert "respx routes answer httpx and httpx2 only" in requests_line
    assert "this request comes from requests" in requests_line
    assert "deps.http.server" in requests_line
    assert "Stub it with" not in requests_line
    own_line = _printed(out, "OWN:")
    assert "this httpx2 request went past respx" in own_line
    other_line = _printed(out, "OTHER:")
    assert "Stub it with deps.http.mock" in other_line  # no route for it: the usual advice
    assert "A route of" not in other_line


def _printed(out: str, label: str) -> str:
    return next(line.partition(label)[2] for line in out.splitlines() if label in line)


def test_server_surprises_fail_the_test(project, pytester):
    project(
        """
        import httpx
        import pytest

        @pytest.mark.deps("http")
        def test_unexpected_request(deps):
            httpx.get(deps.http.server.url_for("/not-expected"))

        @pytest.mark.deps("http")
        def test_handler_error(deps):
            def handler(request):
                raise ValueError("boom in handler")
            deps.http.server.expect_request("/h").respond_with_handler(handler)
            httpx.get(deps.http.server.url_for("/h"))

        @pytest.mark.deps("http")
        def test_ordered_left_unmet(deps):
            deps.http.server.expect_ordered_request("/first").respond_with_data("1")
            deps.http.server.expect_ordered_request("/second").respond_with_data("2")
            httpx.get(deps.http.server.url_for("/first"))

        @pytest.mark.deps("http")
        def test_oneshot_left_unmet(deps):
            deps.http.server.expect_oneshot_request("/once").respond_with_data("1")

        @pytest.mark.deps("http")
        def test_all_met_passes(deps):
            deps.http.server.expect_oneshot_request("/once").respond_with_data("1")
            assert httpx.get(deps.http.server.url_for("/once")).text == "1"

        @pytest.mark.deps("http", assert_all_called=True)
        def test_route_never_called(deps):
            deps.http.mock.get("https://api.example.com/never")
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=5)
    result.stdout.fnmatch_lines([
        "*test_unexpected_request*", "depfakes http: deps.http.server:",
        "*No handler found for request*/not-expected*",
    ])
    result.stdout.fnmatch_lines(["*test_handler_error*", "*a handler raised ValueError('boom in handler')"])
    result.stdout.fnmatch_lines([
        "*test_ordered_left_unmet*", "*1 ordered expectation(s) never requested:",
        "*/second*",
    ])
    result.stdout.fnmatch_lines(["*test_oneshot_left_unmet*",
                                 "*1 oneshot expectation(s) never requested:", "*/once*"])
    result.stdout.fnmatch_lines(["*test_route_never_called*",
                                 "depfakes http: 1 route(s) of deps.http.mock never called (assert_all_called=True):",
                                 "  <Route *<Path eq '/never'>*"])
    # Reported as failures of the tests themselves, not as teardown errors.
    assert "error" not in result.parseoutcomes()


def test_respx_patches_stay_between_http_tests_and_are_gone_for_the_others(project, pytester):
    """Consecutive http tests keep respx's patches (no re-patching per test); a request
    made between two of them goes out as unpatched; a test that does not declare http
    finds httpcore as it is."""
    pytester.makepyfile(test_b_after="""
        import httpcore
        import test_a_http

        def test_unpatched():
            assert httpcore.ConnectionPool.handle_request is test_a_http.ORIGINAL
        """)
    project(
        """
        import http.server, threading
        import httpcore, httpx, pytest

        ORIGINAL = httpcore.ConnectionPool.handle_request
        SEEN = []

        @pytest.fixture(scope="module")
        def local_url():
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     http.server.SimpleHTTPRequestHandler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            yield f"http://127.0.0.1:{server.server_port}/"
            server.shutdown()

        @pytest.mark.deps("http")
        @pytest.mark.parametrize("n", range(3))
        def test_routed(deps, n, local_url):
            SEEN.append(httpcore.ConnectionPool.handle_request)
            deps.http.mock.get("https://api.example.com/").respond(json=n)
            assert httpx.get("https://api.example.com/").json() == n
            assert SEEN[0] is SEEN[-1] is not ORIGINAL
            with pytest.raises(AssertionError, match="matched no route"):
                httpx.get("https://other.example.com/")

        class TestNext:
            @pytest.fixture(scope="class")
            def fetched_before_the_test(self, local_url):
                # Set up before the next http test's router (a wider scope): between two
                # http tests the patches stay, and requests go out as if they were not.
                assert httpcore.ConnectionPool.handle_request is SEEN[0]
                return httpx.get(local_url).status_code

            @pytest.mark.deps("http")
            def test_fixture_between(self, fetched_before_the_test, deps):
                assert fetched_before_the_test == 200
        """,
        name="test_a_http",
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_respx_used_directly_after_a_skipped_http_test_gets_its_routes(project, pytester):
    """The patches kept for an http test that was then skipped never answer for a router
    of respx's own, used without declaring http."""
    project(
        """
        import httpx, pytest, respx

        @pytest.mark.deps("http")
        def test_a(deps):
            deps.http.mock.get("https://api.example.com/").respond(json=1)
            assert httpx.get("https://api.example.com/").json() == 1

        @pytest.mark.deps("http")
        @pytest.mark.skipif(True, reason="skipped before its setup")
        def test_b(deps):
            pass

        def test_c():
            with respx.mock(assert_all_called=True) as router:
                router.get("https://api.example.com/").respond(json=3)
                assert httpx.get("https://api.example.com/").json() == 3
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=2, skipped=1)
