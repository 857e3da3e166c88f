"""`depfakes cassettes check`: secrets and broken files, with file:line findings."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LEAKY = textwrap.dedent("""\
    interactions:
    - request:
        body: '{"user": "ana", "client_secret": "s3cr3t-value"}'
        headers:
          Authorization:
          - Bearer abcdef123456
          Accept:
          - '*/*'
        method: POST
        uri: https://api.example.com/login?api_key=KEY123&page=1
      response:
        body:
          string: '{"id": 1, "aws": "AKIAABCDEFGHIJKLMNOP"}'
        headers:
          Set-Cookie:
          - sid=DEPFAKES-SCRUBBED
        status:
          code: 200
          message: OK
    version: 1
""")

CLEAN = LEAKY.replace("Bearer abcdef123456", "DEPFAKES-SCRUBBED").replace(
    "s3cr3t-value", "DEPFAKES-SCRUBBED").replace("KEY123", "DEPFAKES-SCRUBBED").replace(
    "AKIAABCDEFGHIJKLMNOP", "AKIA-redacted")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "depfakes.cli", *args], cwd=cwd,
                          capture_output=True, text=True)


def test_findings_name_file_and_line(tmp_path):
    (tmp_path / "cassettes" / "mod").mkdir(parents=True)
    leaky = tmp_path / "cassettes" / "mod" / "test_leaky.yaml"
    leaky.write_text(LEAKY)
    (tmp_path / "cassettes" / "broken.yaml").write_text("interactions:\n- [unclosed\n")
    result = run("cassettes", "check", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "cassettes/broken.yaml:3: broken cassette:" in lines[0]
    assert f"{Path('cassettes/mod/test_leaky.yaml')}:3: looks like a secret: request body " \
           "field client_secret (interaction 1)" in lines
    assert "cassettes/mod/test_leaky.yaml:6: looks like a secret: request header " \
           "Authorization (interaction 1)" in lines
    assert "cassettes/mod/test_leaky.yaml:6: looks like a secret: bearer token" in lines
    assert "cassettes/mod/test_leaky.yaml:10: looks like a secret: query parameter api_key " \
           "(interaction 1)" in lines
    assert "cassettes/mod/test_leaky.yaml:13: looks like a secret: AWS access key id" in lines
    assert "sid=" not in result.stdout  # scrubbed values are fine
    assert "2 cassettes checked, 6 finding(s)" in result.stderr


def test_clean_cassettes_pass(tmp_path):
    (tmp_path / "ok.yaml").write_text(CLEAN)
    result = run("cassettes", "check", "ok.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "1 cassette checked, 0 finding(s)" in result.stdout


def test_project_rules_scrub_more(project, pytester, monkeypatch):
    """ini depfakes_scrub names and the scrub hooks apply on top of the defaults."""
    monkeypatch.delenv("DEPFAKES_RECORD_MODE", raising=False)
    project(
        """
        import httpx, pytest

        @pytest.mark.deps("http")
        def test_it(deps):
            deps.http.server.expect_request("/x").respond_with_json({"email": "ana@example.com"})
            url = deps.http.server.url_for("/x").replace("127.0.0.1", "api.depfakes.test")
            r = httpx.get(url, headers={"X-Tenant": "tenant-42"})
            assert r.json() == {"email": "ana@example.com"}  # the client sees the real data
        """,
        conftest="""
        import socket

        _real = socket.getaddrinfo
        def _resolve(host, *a, **k):
            name = host.decode() if isinstance(host, bytes) else host
            return _real("127.0.0.1" if name == "api.depfakes.test" else host, *a, **k)
        socket.getaddrinfo = _resolve

        def pytest_depfakes_scrub_response(response):
            response["body"]["string"] = response["body"]["string"].replace(
                b"ana@example.com", b"someone@example.com")
        """,
        ini="depfakes_scrub = X-Tenant",
    )
    pytester.runpytest_subprocess("--record-mode=once").assert_outcomes(passed=1)
    cassette = (pytester.path / "cassettes" / "test_project" / "test_it.yaml").read_text()
    assert "tenant-42" not in cassette
    assert "ana@example.com" not in cassette
    assert "someone@example.com" in cassette
    result = run("cassettes", "check", cwd=pytester.path)
    assert result.returncode == 0, result.stdout


@pytest.mark.serial  # `down --all` would stop other tests' servers
def test_ps_and_down_for_killed_and_live_sessions(holder, tmp_path):
    import signal

    from depfakes.backends import BackendUnavailable
    from depfakes.providers.postgres import _find_bindir

    try:
        _find_bindir(None)
    except BackendUnavailable:
        if os.environ.get("CI"):
            raise
        pytest.skip("needs PostgreSQL binaries")

    def start() -> subprocess.Popen[bytes]:
        return holder("local")

    def kill(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    first = start()
    kill(first)
    assert f"session gone   pid {first.pid} " in run("ps", cwd=tmp_path).stdout
    live = start()  # starting a server sweeps the dead session's
    killed = start()
    kill(killed)
    try:
        ps = run("ps", cwd=tmp_path)
        assert f"pid {first.pid} " not in ps.stdout
        rows = ps.stdout.splitlines()
        assert any("session gone" in r and f"pid {killed.pid} " in r for r in rows), ps.stdout
        assert any("session alive" in r and f"pid {live.pid} " in r for r in rows), ps.stdout
        down = run("down", cwd=tmp_path)
        assert "removed local " in down.stdout
        assert "1 kept (--project removes this project's kept servers, --all every one)" \
            in down.stdout
        rows = run("ps", cwd=tmp_path).stdout
        assert f"pid {killed.pid} " not in rows
        assert f"pid {live.pid} " in rows
        assert "removed local " in run("down", "--all", cwd=tmp_path).stdout
        assert f"pid {live.pid} " not in run("ps", cwd=tmp_path).stdout
    finally:
        live.send_signal(signal.SIGINT)
        live.wait(timeout=60)


def test_doctor_says_what_serves_and_fails_for_a_declared_dependency(project, pytester,
                                                                      monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.delenv("DEPFAKES_POSTGRES_URL", raising=False)
    project("""
        import pytest

        @pytest.mark.deps("postgres", "redis")
        def test_it(deps):
            pass
    """)
    result = run("doctor", "--", "--deps-backend", "postgres=url", cwd=pytester.path)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "postgres   declared by 1 test(s)      -> NO BACKEND" in out
    assert "    url         no   set DEPFAKES_POSTGRES_URL to use an existing server" in out
    assert "    docker      no   the Docker engine at unix:///nonexistent/docker.sock is not reachable" in out
    assert "redis      declared by 1 test(s)      -> fake" in out
    assert "depfakes doctor: postgres cannot run here, but tests declare it" in out

    result = run("doctor", cwd=pytester.path)  # auto: local binaries may serve here
    local_ok = "    local       yes" in result.stdout
    assert result.returncode == (0 if local_ok else 1), result.stdout


def test_doctor_says_a_missing_image_needs_a_pull_and_what_runs_without_one(project,
                                                                           pytester,
                                                                           monkeypatch):
    """Where the image is not on the engine, docker serves only once a registry is
    reached: the doctor says so and names the backend a run then falls back to."""
    from tests.servers import docker_ok, local_ok, need

    need(docker_ok() and local_ok(), "a Docker engine and PostgreSQL binaries")
    monkeypatch.delenv("DEPFAKES_POSTGRES_URL", raising=False)
    monkeypatch.setenv("DEPFAKES_POSTGRES_IMAGE", "local/no-such-postgres:1")
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            pass
    """)
    result = run("doctor", cwd=pytester.path)
    assert result.returncode == 0, result.stdout
    assert ("postgres   declared by 1 test(s)      -> docker (after pulling its image; if no "
            "registry is reachable, local)") in result.stdout
    assert "needs a pull: image local/no-such-postgres:1 is not present locally" in result.stdout


CURSORS = textwrap.dedent("""\
    interactions:
    - request:
        body: null
        headers:
          Authorization:
          - <REDACTED>
          X-Api-Key:
          - XXXXXXXX
        method: GET
        uri: https://api.example.com/tiles?quadkey=0231&page=2
      response:
        body:
          string: '{"items": [], "token": "eyAbc-next-page", "has_more": true, "note": "same"}'
        headers:
          Access-Control-Allow-Credentials:
          - 'true'
        status:
          code: 200
          message: OK
    - request:
        body: '{"note": "same", "password": "hunter2-real"}'
        headers: {}
        method: POST
        uri: https://api.example.com/login
      response:
        body:
          string: ''
        headers: {}
        status:
          code: 204
          message: No Content
    version: 1
""")


def test_check_finds_the_layouts_of_other_plugins_and_fails_on_nothing(tmp_path):
    assert "no cassettes found" in run("cassettes", "check", cwd=tmp_path).stderr
    assert run("cassettes", "check", cwd=tmp_path).returncode == 1  # a CI gate checking nothing
    recorded = tmp_path / "tests" / "api" / "cassettes" / "test_tiles"  # pytest-recording's
    recorded.mkdir(parents=True)
    (recorded / "test_page.yaml").write_text(CURSORS)
    result = run("cassettes", "check", cwd=tmp_path)
    assert "1 cassette checked, 2 finding(s)" in result.stderr
    where = Path("tests/api/cassettes/test_tiles/test_page.yaml")
    # Placeholders, flags, CORS, tile keys: no findings. The secrets: found on their lines.
    assert result.stdout.splitlines() == [
        f"{where}:13: looks like a secret: response body field token (interaction 1)",
        f"{where}:21: looks like a secret: request body field password (interaction 2)",
    ]
    allowed = run("cassettes", "check", "--allow", "token", cwd=tmp_path)
    assert allowed.stdout.splitlines() == [
        f"{where}:21: looks like a secret: request body field password (interaction 2)"]


def test_check_reads_the_configured_cassette_dir(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\ndepfakes_cassette_dir = recorded\n")
    (tmp_path / "recorded").mkdir()
    (tmp_path / "recorded" / "leaky.yaml").write_text(LEAKY)
    result = run("cassettes", "check", cwd=tmp_path)
    assert result.returncode == 1
    assert "1 cassette checked, 5 finding(s)" in result.stderr
