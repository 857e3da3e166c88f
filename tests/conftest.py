from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.servers import postgres_server as start_postgres_server

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server the tests start themselves, for the url backend."""
    with start_postgres_server() as url:
        yield url


@pytest.fixture
def project(pytester: pytest.Pytester):
    """Write a small test project: project(test_source, conftest=..., ini=...)."""

    def write(source: str, *, conftest: str | None = None, ini: str | None = None,
              name: str = "test_project") -> pytest.Pytester:
        pytester.makepyfile(**{name: textwrap.dedent(source)})
        if conftest is not None:
            pytester.makeconftest(textwrap.dedent(conftest))
        if ini is not None:
            pytester.makeini("[pytest]\n" + textwrap.dedent(ini))
        return pytester

    return write


@pytest.fixture
def holder(project, pytester, tmp_path):
    """start(backend) -> a pytest process whose one test holds a postgres server from
    ``backend`` until it is killed; returns once the server is up."""
    marker = tmp_path / "holder-up"
    project(
        f"""
        import pathlib, time
        import pytest

        @pytest.mark.deps("postgres")
        def test_hold(deps):
            pathlib.Path({str(marker)!r}).write_text(deps.postgres.dsn)
            time.sleep(120)
        """,
        name="test_hold",
    )

    def start(backend: str) -> subprocess.Popen[bytes]:
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                                 "--deps-backend", f"postgres={backend}", "test_hold.py"],
                                cwd=pytester.path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while not marker.exists():
            assert proc.poll() is None, "holder exited before its server was up"
            assert time.monotonic() < deadline, "holder never started"
            time.sleep(0.1)
        return proc

    return start
