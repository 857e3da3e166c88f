"""Record against a 'remote' API (a local server reached through a hostname that is not
written as loopback), then replay with that server stopped; scrubbing, record modes,
messages, and the network policy for every client."""

from __future__ import annotations

import gzip
import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

HOST = "api.depfakes.test"

# The test project's resolver override: HOST resolves to 127.0.0.1, as an /etc/hosts
# entry would. depfakes still treats HOST like any remote host.
RESOLVER = f"""
import socket

_real = socket.getaddrinfo

def _resolve(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host  # anyio passes bytes
    return _real("127.0.0.1" if name == {HOST!r} else host, *args, **kwargs)

socket.getaddrinfo = _resolve
"""


class RemoteApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path.split("?")[0], "access_token": "tok-RESPONSE-SECRET",
                           "user": "ana"}).encode()
        headers = {"Content-Type": "application/json", "Set-Cookie": "sid=COOKIE-SECRET"}
        if self.path.startswith("/gzip"):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def remote():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RemoteApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


CLIENTS = """
import asyncio, os
import aiohttp, httpx, pytest, requests, urllib3

BASE = os.environ["REMOTE_BASE"]
SECRET_HEADERS = {"Authorization": "Bearer REQUEST-SECRET", "X-Api-Key": "KEY-SECRET"}

@pytest.mark.deps("http")
def test_httpx(deps):
    r = httpx.get(f"{BASE}/users?token=QUERY-SECRET&page=2", headers=SECRET_HEADERS)
    assert r.json()["user"] == "ana"
    assert httpx.get(f"{BASE}/users?token=QUERY-SECRET&page=2").status_code == 200  # repeat

@pytest.mark.deps("http")
def test_httpx_async(deps):
    async def go():
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{BASE}/async")).json()
    assert asyncio.run(go())["path"] == "/async"

@pytest.mark.deps("http")
def test_requests_form(deps):
    r = requests.post(f"{BASE}/login", data={"user": "ana", "password": "FORM-SECRET"})
    assert r.status_code == 501  # http.server has no do_POST; recorded as-is
    assert requests.get(f"{BASE}/gzip/data").json()["user"] == "ana"

@pytest.mark.deps("http")
def test_aiohttp(deps):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{BASE}/aio") as response:
                return await response.json()
    assert asyncio.run(go())["path"] == "/aio"

@pytest.mark.deps("http")
def test_urllib3(deps):
    assert urllib3.request("GET", f"{BASE}/u3").json()["path"] == "/u3"

@pytest.mark.deps("http")
def test_layers(deps):
    deps.http.mock.get(f"{BASE}/stubbed").respond(200, json={"stub": True})
    assert httpx.get(f"{BASE}/stubbed").json() == {"stub": True}
    deps.http.server.expect_request("/local").respond_with_json({"local": True})
    assert httpx.get(deps.http.server.url_for("/local")).json() == {"local": True}
    assert httpx.get(f"{BASE}/recorded").json()["path"] == "/recorded"
    assert deps.http.record_mode in ("once", "none")
"""


def _project(project, pytester, remote, monkeypatch):
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    monkeypatch.delenv("DEPFAKES_RECORD_MODE", raising=False)
    return project(CLIENTS, conftest=RESOLVER, name="test_clients")


def _cassettes(pytester) -> dict[str, str]:
    root = pytester.path / "cassettes"
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.yaml"))}


def test_record_then_replay_with_the_server_gone(project, pytester, remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    recorded = pytester.runpytest_subprocess("--record-mode=once", "-p", "no:randomly")
    recorded.assert_outcomes(passed=6)
    cassettes = _cassettes(pytester)
    assert sorted(cassettes) == [f"test_clients/test_{n}.yaml" for n in
                                 ("aiohttp", "httpx", "httpx_async", "layers", "requests_form",
                                  "urllib3")]
    everything = "\n".join(cassettes.values())
    # Secrets are scrubbed from requests and responses, gzip responses included.
    for secret in ("REQUEST-SECRET", "KEY-SECRET", "QUERY-SECRET", "FORM-SECRET",
                   "tok-RESPONSE-SECRET", "COOKIE-SECRET"):
        assert secret not in everything, secret
    assert "DEPFAKES-SCRUBBED" in cassettes["test_clients/test_requests_form.yaml"]
    assert "/gzip/data" in cassettes["test_clients/test_requests_form.yaml"]
    # respx routes and loopback traffic never reach a cassette.
    layers = cassettes["test_clients/test_layers.yaml"]
    assert "/recorded" in layers
    assert "/stubbed" not in layers
    assert "/local" not in layers
    assert "127.0.0.1" not in layers

    remote.shutdown()
    remote.server_close()
    replayed = pytester.runpytest_subprocess("-p", "no:randomly")  # record mode none
    replayed.assert_outcomes(passed=6)
    assert _cassettes(pytester) == cassettes  # replay writes nothing


def test_the_handle_exposes_the_cassette(project, pytester, remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    pytester.runpytest_subprocess("--deps-record-mode=once", "-k", "test_httpx and not async")
    project(
        """
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_httpx(deps):
            assert deps.http.record_mode == "none"
            assert len(deps.http.cassette) == 2  # the request and its repeat, each recorded
            for _ in range(2):
                httpx.get(os.environ["REMOTE_BASE"] + "/users?token=other&page=2")
            assert deps.http.cassette.play_count == 2
            # As in vcrpy: each recorded response plays once, in order; then no more.
            with pytest.raises(Exception, match="is not in cassette"):
                httpx.get(os.environ["REMOTE_BASE"] + "/users?token=other&page=2")
        """,
        name="test_clients",
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    project(
        """
        import os, httpx, pytest

        @pytest.mark.deps("http", playback_repeats=True)  # opted in: answers repeat
        def test_httpx(deps):
            for _ in range(3):
                httpx.get(os.environ["REMOTE_BASE"] + "/users?token=other&page=2")
            assert deps.http.cassette.play_count == 3
        """,
        name="test_clients",
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_request_recorded_twice_replays_its_responses_in_order(project, pytester):
    """Page 1 then page 2 of the same URL (or a 401 then a 200): replayed in the order
    recorded, as vcrpy does, not the first response every time."""
    cassette = pytester.path / "cassettes" / "test_pages" / "test_pages.yaml"
    cassette.parent.mkdir(parents=True)
    interaction = """- request:
    body: null
    headers: {{}}
    method: GET
    uri: https://api.example.com/items
  response:
    body: {{string: '{{"page": {page}}}'}}
    headers: {{Content-Type: [application/json]}}
    status: {{code: 200, message: OK}}
"""
    cassette.write_text("interactions:\n" + interaction.format(page=1) +
                        interaction.format(page=2) + "version: 1\n")
    project("""
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_pages(deps):
            pages = [httpx.get("https://api.example.com/items").json()["page"]
                     for _ in range(2)]
            assert pages == [1, 2]
    """, name="test_pages")
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_missing_interaction_says_what_to_do(project, pytester, remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    pytester.runpytest_subprocess("--record-mode=once", "-k", "test_httpx and not async")
    project(
        """
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_httpx(deps):
            httpx.get(os.environ["REMOTE_BASE"] + "/users/7?page=2")
        """,
        name="test_clients",
    )
    result = pytester.runpytest_subprocess()  # CI's mode: none
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"E * depfakes http: GET http://{HOST}:*/users/7?page=2 is not in cassette "
        "*cassettes/test_clients/test_httpx.yaml (record mode 'none').",
        f"E * Closest recorded request: GET http://{HOST}:*/users?token=DEPFAKES-SCRUBBED"
        "&page=2 (differs in: path, query)",
        "E *   path: /users/7 != /users",
        "E * Record it against the real API with pytest 'test_clients.py::test_httpx' "
        "--record-mode=new_episodes (never in CI), or stub it with deps.http.mock.",
    ])


def test_record_mode_none_is_authoritative(project, pytester, remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    project(
        """
        import pytest

        @pytest.mark.deps("http", record_mode="all")
        def test_it(deps):
            pass
        """,
        name="test_marker",
    )
    result = pytester.runpytest_subprocess("test_marker.py")
    result.stderr.fnmatch_lines(["*unknown option record_mode=*"])
    # No cassettes and record mode none: every client is refused, nothing is written.
    result = pytester.runpytest_subprocess("test_clients.py", "-p", "no:randomly")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines([f"*depfakes: network access to {HOST}:* is refused (this test "
                                 "declares 'http'; no cassette at */cassettes/test_clients/"
                                 "test_*.yaml (record mode 'none')). Stub it with "
                                 "deps.http.mock, record it*"])
    assert not (pytester.path / "cassettes").exists()


def test_broken_cassette_fails_with_its_path_and_is_kept(project, pytester, remote,
                                                        monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    broken = pytester.path / "cassettes" / "test_clients" / "test_httpx.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text("interactions:\n- request: {method: GET\n  oops: [\n")
    result = pytester.runpytest_subprocess("--record-mode=all", "-k", "test_httpx and not async")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*BrokenCassette: depfakes http: cassette {broken} is broken: "
                                 "while parsing*Fix or delete it*"])
    assert broken.read_text() == "interactions:\n- request: {method: GET\n  oops: [\n"
    broken.write_text("interactions:\n- request: {uri: http://x/}\n  response: {status: 200}\n")
    result = pytester.runpytest_subprocess("-k", "test_httpx and not async")
    result.stdout.fnmatch_lines(["*is broken: interaction 1 has no request with a method and "
                                 "uri*"])


def test_shared_and_parametrized_cassette_names(project, pytester, remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    project(
        """
        import os, httpx, pytest

        @pytest.mark.deps("http", cassette="shared-api")
        def test_a(deps):
            httpx.get(os.environ["REMOTE_BASE"] + "/a")

        @pytest.mark.deps("http")
        @pytest.mark.parametrize("who", ["ana/b", "c d"])
        def test_p(deps, who):
            httpx.get(os.environ["REMOTE_BASE"] + "/p")
        """,
        name="test_names",
    )
    pytester.runpytest_subprocess("--record-mode=once", "test_names.py").assert_outcomes(passed=3)
    assert sorted(_cassettes(pytester)) == ["shared-api.yaml", "test_names/test_p[ana_b].yaml",
                                            "test_names/test_p[c_d].yaml"]


def test_deps_record_mode_works_when_another_plugin_owns_record_mode(project, pytester,
                                                                      remote, monkeypatch):
    _project(project, pytester, remote, monkeypatch)
    pytester.makepyfile(other_plugin=textwrap.dedent("""
        def pytest_addoption(parser):
            parser.addoption("--record-mode", dest="other_record_mode", default="x")
    """))
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    result = pytester.runpytest_subprocess("-p", "other_plugin", "--deps-record-mode=once",
                                           "-k", "test_httpx and not async")
    result.assert_outcomes(passed=1)
    assert list(_cassettes(pytester)) == ["test_clients/test_httpx.yaml"]


def test_block_network_for_every_test_with_an_allow_list(project, pytester, remote,
                                                         monkeypatch):
    port = remote.server_address[1]
    project(
        f"""
        import socket, httpx, pytest

        def test_not_declared_is_blocked():
            with pytest.raises(httpx.ConnectError, match="network access to other.depfakes.test"):
                httpx.get("http://other.depfakes.test:{port}/")

        def test_allowed_host():
            assert httpx.get("http://{HOST}:{port}/ok").json()["path"] == "/ok"

        def test_loopback_and_unix_sockets():
            assert httpx.get("http://127.0.0.1:{port}/lo").status_code == 200
            a, b = socket.socketpair()
            a.close(); b.close()
        """,
        conftest=RESOLVER.replace(f"name == {HOST!r}", f"name in ({HOST!r}, 'other.depfakes.test')"),
        ini=f"depfakes_block_network = true\ndepfakes_allow_hosts = {HOST}",
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=3)


def test_every_client_is_refused_at_the_socket(project, pytester, monkeypatch):
    project(
        """
        import asyncio, socket
        import aiohttp, httpx, pytest, requests, urllib3

        pytestmark = pytest.mark.deps("http")
        URL = "http://example.invalid:8080/"
        MSG = "network access to example.invalid:8080 is refused"

        def test_requests():
            with pytest.raises(requests.ConnectionError, match=MSG):
                requests.get(URL)

        def test_urllib3():
            with pytest.raises(urllib3.exceptions.HTTPError, match=MSG):
                urllib3.request("GET", URL, retries=False)

        def test_aiohttp():
            async def go():
                async with aiohttp.ClientSession() as session:
                    await session.get(URL)
            with pytest.raises(aiohttp.ClientError, match=MSG):
                asyncio.run(go())

        def test_raw_socket_to_an_ip():
            with pytest.raises(ConnectionRefusedError, match="network access to 192.0.2.1:80"):
                socket.socket().connect(("192.0.2.1", 80))

        def test_httpx_unstubbed():
            with pytest.raises(AssertionError, match="matched no route.*--record-mode=once"):
                httpx.get(URL)
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=5)


@pytest.mark.serial  # counts on the shared engine, like test_postgres
def test_moto_and_real_servers_keep_working_beside_http(project, pytester, monkeypatch):
    """s3 (moto in-process and its loopback server) and postgres (a container reached on
    127.0.0.1, Docker through its Unix socket) are untouched by the policy and never
    recorded, even while recording."""
    import os
    import shutil
    import subprocess

    if not (shutil.which("docker") and os.environ.get("DEPFAKES_POSTGRES_IMAGE")
            and subprocess.run(["docker", "info"], capture_output=True).returncode == 0):
        if os.environ.get("CI"):
            pytest.fail("CI must provide Docker and DEPFAKES_POSTGRES_IMAGE")
        pytest.skip("needs a Docker engine and DEPFAKES_POSTGRES_IMAGE")
    monkeypatch.delenv("DEPFAKES_RECORD_MODE", raising=False)
    project(
        """
        import boto3, docker, pytest

        @pytest.mark.deps("http", "s3", "postgres")
        def test_all(deps):
            deps.s3.create_bucket("bucket")
            deps.s3.client.put_object(Bucket="bucket", Key="k", Body=b"v")
            remote = boto3.client("s3", endpoint_url=deps.s3.endpoint_url)
            assert remote.get_object(Bucket="bucket", Key="k")["Body"].read() == b"v"
            assert deps.postgres.connect().execute("SELECT 1").fetchone() == (1,)
            with deps.postgres.connect(autocommit=True) as conn:  # connect()'s own options
                assert conn.execute("SELECT 2").fetchone() == (2,)
            # The test's own Docker calls (testcontainers uses docker-py) work too.
            assert docker.from_env().ping()
        """
    )
    for mode in ("none", "once"):
        result = pytester.runpytest_subprocess(f"--record-mode={mode}", "--deps-backend",
                                               "postgres=docker")
        result.assert_outcomes(passed=1)
    cassettes = list((pytester.path / "cassettes").rglob("*.yaml")) if (
        pytester.path / "cassettes").exists() else []
    recorded = "".join(path.read_text() for path in cassettes)
    assert "amazonaws" not in recorded
    assert "127.0.0.1" not in recorded


class PlantedApi(BaseHTTPRequestHandler):
    """An API whose answers carry secrets the way real ones do (OAuth, STS, redirects)."""

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/oauth/implicit"):
            self._send(302, b"", "text/plain",
                       Location="https://app.example/cb#access_token=FRAG-SECRET-1&state=xyz")
        elif self.path.startswith("/sts"):
            self._send(200, b"<AssumeRoleResponse><Credentials><AccessKeyId>ASIAABCDEFGHIJKLMNOP"
                            b"</AccessKeyId><SecretAccessKey>STS-SECRET-5</SecretAccessKey>"
                            b"<SessionToken>STS-SESSION-6</SessionToken></Credentials>"
                            b"</AssumeRoleResponse>", "text/xml")
        else:
            self._send(200, b'{"ok": true}', "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/oauth/token"):
            self._send(200, json.dumps({
                "access_token": "OAUTH-ACCESS-2", "refresh_token": "OAUTH-REFRESH-3",
                "id_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.c2lnbmF0dXJlX3NlY3JldA",
                "token_type": "bearer"}).encode(), "application/json")
        elif self.path.startswith("/oauth/form"):
            self._send(200, b"access_token=FORM-ACCESS-4&scope=repo",
                       "application/x-www-form-urlencoded")
        else:
            self._send(200, b'{"ok": true}', "application/json")

    def log_message(self, *args: object) -> None:
        pass


PLANTED_CLIENTS = """
import asyncio, gzip, json, os
import aiohttp, httpx, pytest, requests, urllib3

BASE = os.environ["REMOTE_BASE"]
pytestmark = pytest.mark.deps("http")

def test_aiohttp_json_body():
    async def go():
        async with aiohttp.ClientSession() as session:
            body = {"password": "AIOHTTP-JSON-7", "nested": {"api_key": ["LIST-8"]}}
            async with session.post(f"{BASE}/aio", json=body) as response:
                return response.status
    assert asyncio.run(go()) == 200

def test_httpx_gzip_request_and_oauth():
    body = gzip.compress(json.dumps({"client_secret": "GZIP-9", "grant": "x"}).encode())
    r = httpx.post(f"{BASE}/oauth/token", content=body,
                   headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert r.json()["token_type"] == "bearer"
    assert httpx.post(f"{BASE}/oauth/form", data={"a": "b"}).status_code == 200
    assert httpx.get(f"{BASE}/oauth/implicit").status_code == 302
    assert b"AssumeRoleResponse" in httpx.get(f"{BASE}/sts").content

def test_requests_multipart_and_secret_names():
    r = requests.post(f"{BASE}/upload", data={"passphrase": "MULTI-10", "title": "t"},
                      files={"f": ("a.txt", b"hello")})
    assert r.status_code == 200
    r = requests.post(f"{BASE}/json", json={
        "credentials": {"user": "ana", "value": "DICT-11"}, "otp": "OTP-12", "code": "CODE-13",
        "code_verifier": "VERIFIER-14", "jwt": "JWT-15", "client_assertion": "ASSERT-16",
        "connection_string": "CONN-17", "sessionid": "SESS-18"})
    assert r.status_code == 200

def test_urllib3_header_and_token_in_path():
    token = "ghp_" + "A" * 20 + "0123456789abcdef"
    r = urllib3.request("GET", f"{BASE}/repos/{token}/x", headers={"X-JWT-Assertion": "HDR-19"})
    assert r.status == 200
"""

PLANTED = ["FRAG-SECRET-1", "OAUTH-ACCESS-2", "OAUTH-REFRESH-3", "c2lnbmF0dXJlX3NlY3JldA",
           "FORM-ACCESS-4", "STS-SECRET-5", "STS-SESSION-6", "ASIAABCDEFGHIJKLMNOP",
           "AIOHTTP-JSON-7", "LIST-8", "GZIP-9", "MULTI-10", "DICT-11", "OTP-12", "CODE-13",
           "VERIFIER-14", "JWT-15", "ASSERT-16", "CONN-17", "SESS-18", "HDR-19",
           "ghp_AAAAAAAAAAAAAAAAAAAA0123456789abcdef"]


def test_planted_secrets_never_reach_the_cassette(project, pytester, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), PlantedApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{server.server_address[1]}")
        monkeypatch.delenv("DEPFAKES_RECORD_MODE", raising=False)
        project(PLANTED_CLIENTS, conftest=RESOLVER, name="test_planted")
        recorded = pytester.runpytest_subprocess("--record-mode=once", "-p", "no:randomly")
        recorded.assert_outcomes(passed=4)
    finally:
        server.shutdown()
        server.server_close()
    everything = "\n".join(_cassettes(pytester).values())
    assert len(_cassettes(pytester)) == 4
    found = [secret for secret in PLANTED if secret in everything]
    assert found == [], f"written to disk: {found}"
    assert "title" in everything  # the rest is kept
    assert "scope=repo" in everything
    check = _check(pytester.path / "cassettes")
    assert check.returncode == 0, check.stdout
    # Replay still matches the scrubbed requests (token in the path included).
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=4)


def _check(path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "depfakes.cli", "cassettes", "check",
                           str(path)], capture_output=True, text=True, timeout=60)


def test_check_finds_what_scrubbing_missed_by_shape_and_entropy(tmp_path):
    cassette = tmp_path / "missed.yaml"
    cassette.write_text(textwrap.dedent("""\
        interactions:
        - request:
            body: null
            headers:
              X-Custom:
              - q8ZfT2mW9xKpL4vN7cR1sB6yH3jD0gAe
              User-Agent:
              - python-httpx/0.28.1 8f2a9c1e7b3d4f6a0e5c9b8d7a6f5e4d3c2b1a09
            method: GET
            uri: https://api.example.com/v1/things
          response:
            body:
              string: '{"data": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbmEifQ.c2lnbmF0dXJlX3NlY3JldA",
                "cursor": "abc"}'
            headers:
              X-Thing:
              - sk_live_0123456789abcdefABCD
            status:
              code: 200
              message: OK
        version: 1
        """))
    check = _check(cassette)
    assert check.returncode == 1
    out = check.stdout
    assert f"{cassette}:6: looks like a secret: request header X-Custom" in out
    assert "User-Agent" not in out
    assert f"{cassette}:13: looks like a secret: JWT" in out
    assert f"{cassette}:17: looks like a secret: Stripe key" in out
    assert "cursor" not in out


def test_scrubbing_keeps_what_is_not_secret_byte_for_byte():
    """What a real API answers with is data, not secrets: S3's <Key> and error <Code>,
    JSON error codes, numbers as written; a multipart body keeps its files and boundary."""
    from depfakes.cassettes import PLACEHOLDER, Scrubber

    scrubber = Scrubber()

    def response(body: bytes, content_type: str) -> bytes:
        recorded = {"status": {"code": 200}, "headers": {"Content-Type": [content_type]},
                    "body": {"string": body}}
        return scrubber.response(recorded)["body"]["string"]

    listing = (b"<ListBucketResult><Contents><Key>photos/cat.jpg</Key></Contents>"
               b"</ListBucketResult>")
    assert response(listing, "application/xml") == listing
    error = b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>"
    assert response(error, "application/xml") == error
    sts = b"<Credentials><SessionToken>abc</SessionToken></Credentials>"
    assert response(sts, "text/xml") == \
        f"<Credentials><SessionToken>{PLACEHOLDER}</SessionToken></Credentials>".encode()
    data = '{"error": {"code": 404}, "price": 1.10, "name": "café"}'.encode()
    assert response(data, "application/json") == data  # unchanged bytes, not re-dumped
    html = b"<html><code>x = 1</code></html>"
    assert response(html, "text/html") == html

    class Request:
        def __init__(self, body: bytes, content_type: str) -> None:
            self.headers = {"Content-Type": content_type}
            self.uri = "https://api.example.com/upload"
            self.body = body

    boundary = "AbCdEf123"
    binary = bytes(range(256))
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n"
            f"MULTI-SECRET\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"f\"; "
            f"filename=\"a.bin\"\r\n\r\n").encode() + binary + f"\r\n--{boundary}--\r\n".encode()
    scrubbed = scrubber.request(Request(body, f"multipart/form-data; boundary={boundary}")).body
    assert b"MULTI-SECRET" not in scrubbed
    assert binary in scrubbed  # the file's bytes, as sent
    assert scrubbed.endswith(f"--{boundary}--\r\n".encode())


RECORDED_BODY = ('{"items": [1],  "token": "cursor-2", "quadkey": "0231", '
                 '"access_token": "tok-1.10"}')


def _cassette_yaml(uri: str, body: str, headers: dict[str, list[str]]) -> str:
    import yaml

    return yaml.safe_dump({"version": 1, "interactions": [{
        "request": {"method": "GET", "uri": uri, "body": None, "headers": {}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": headers,
                     "body": {"string": body}},
    }]})


def test_replay_gives_the_recorded_bytes_and_new_episodes_keeps_them(project, pytester,
                                                                     remote, monkeypatch):
    """A cassette another tool recorded, unscrubbed: replay hands the code its bytes
    (secret-looking names and all), and recording more into it rewrites none of them."""
    port = remote.server_address[1]
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{port}")
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_pages():
            base = os.environ["REMOTE_BASE"]
            page = httpx.get(base + "/items?token=cursor-1")
            print("BODY", repr(page.content))
            assert page.headers["access-control-allow-credentials"] == "true"
            if os.environ.get("MORE"):
                httpx.get(base + "/more?api_key=KEY-NEW-SECRET")
    """, conftest=RESOLVER, name="test_pages")
    cassette = pytester.path / "cassettes" / "test_pages" / "test_pages.yaml"
    cassette.parent.mkdir(parents=True)
    cassette.write_text(_cassette_yaml(
        f"http://{HOST}:{port}/items?token=cursor-1", RECORDED_BODY,
        {"Content-Type": ["application/json"], "Access-Control-Allow-Credentials": ["true"],
         "Set-Cookie": ["sid=OLD-COOKIE"]}))
    original = cassette.read_bytes()

    replayed = pytester.runpytest_subprocess("-s")
    replayed.assert_outcomes(passed=1)
    assert f"BODY {RECORDED_BODY.encode()!r}" in replayed.stdout.str()  # byte for byte
    assert cassette.read_bytes() == original

    monkeypatch.setenv("MORE", "1")
    pytester.runpytest_subprocess("--record-mode=new_episodes").assert_outcomes(passed=1)
    import yaml

    interactions = yaml.safe_load(cassette.read_text())["interactions"]
    assert interactions[0] == yaml.safe_load(original)["interactions"][0]  # untouched
    new = interactions[1]
    assert new["request"]["uri"].endswith("/more?api_key=DEPFAKES-SCRUBBED")
    assert "KEY-NEW-SECRET" not in cassette.read_text()
    assert "tok-RESPONSE-SECRET" not in cassette.read_text()  # the new response, scrubbed
    assert "OLD-COOKIE" in cassette.read_text()  # the old one is not ours to rewrite


def test_scrub_names_can_be_narrowed(project, pytester, remote, monkeypatch):
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_cursor():
            httpx.get(os.environ["REMOTE_BASE"] + "/items?page_token=p2&access_token=SECRET-A")
    """, conftest=RESOLVER, name="test_cursor", ini="depfakes_scrub =\n    -page_token\n")
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    text = (pytester.path / "cassettes" / "test_cursor" / "test_cursor.yaml").read_text()
    assert "page_token=p2" in text  # kept, as configured
    assert "SECRET-A" not in text  # the rest of the built-in rules still apply


def test_a_cassette_recorded_with_filter_query_parameters_replays(project, pytester,
                                                                  remote, monkeypatch):
    port = remote.server_address[1]
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{port}")
    project("""
        import os, httpx, pytest

        @pytest.fixture
        def vcr_config():
            return {"filter_query_parameters": ["api_key"]}

        @pytest.mark.deps("http")
        def test_search():
            assert httpx.get(os.environ["REMOTE_BASE"] + "/search?q=x&api_key=LIVE").json() \\
                == {"hits": 1}
    """, conftest=RESOLVER, name="test_search")
    cassette = pytester.path / "cassettes" / "test_search" / "test_search.yaml"
    cassette.parent.mkdir(parents=True)
    cassette.write_text(_cassette_yaml(f"http://{HOST}:{port}/search?q=x", '{"hits": 1}',
                                       {"Content-Type": ["application/json"]}))
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_recorded_token_cursor_paginates_in_order(project, pytester, remote, monkeypatch):
    """Pages fetched with ?token=<cursor> are recorded with the cursor scrubbed; on replay
    each page's request matches its own recording (a scrubbed value matches any), in order."""
    monkeypatch.setenv("REMOTE_BASE", f"http://{HOST}:{remote.server_address[1]}")
    project("""
        import os, httpx, pytest

        @pytest.mark.deps("http")
        def test_all_pages():
            base, paths, cursor = os.environ["REMOTE_BASE"], [], None
            for page in range(3):
                url = base + f"/page{page}" + (f"?token={cursor}" if cursor else "")
                paths.append(httpx.get(url).json()["path"])
                cursor = f"c{page}"
            assert paths == ["/page0", "/page1", "/page2"]
    """, conftest=RESOLVER, name="test_all_pages")
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    text = (pytester.path / "cassettes" / "test_all_pages" / "test_all_pages.yaml").read_text()
    assert text.count("token=DEPFAKES-SCRUBBED") == 2
    remote.shutdown()
    remote.server_close()
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
