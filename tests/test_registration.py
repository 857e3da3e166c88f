"""Loading the plugin every documented way, providers from third parties, missing extras."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

USES_REDIS = """
    import pytest

    @pytest.mark.deps("redis")
    def test_it(deps, redis):
        redis.client.set("k", "v")
        assert deps.redis.client.get("k") == b"v"
"""


def test_pytest_plugins_in_conftest_without_autoload(project, pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    project(USES_REDIS, conftest='pytest_plugins = ["depfakes"]')
    result = pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=1)


def test_star_import_of_fixtures_alone_without_autoload(project, pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    project(USES_REDIS, conftest="from depfakes.fixtures import *  # noqa: F403")
    result = pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("conftest", ['pytest_plugins = ["depfakes"]',
                                      "from depfakes.fixtures import *  # noqa: F403"])
def test_explicit_loading_is_harmless_when_autoload_already_loaded_it(project, pytester,
                                                                     conftest):
    project(USES_REDIS, conftest=conftest)
    pytester.runpytest_subprocess("--strict-markers").assert_outcomes(passed=1)


def test_without_the_plugin_the_fixture_says_how_to_load_it(project, pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    project(
        """
        from depfakes.fixtures import deps  # the plugin itself is never loaded

        def test_it(deps):
            pass
        """
    )
    result = pytester.runpytest_subprocess()
    assert ("depfakes fixtures are in use but the depfakes plugin is not loaded; add "
            'pytest_plugins = ["depfakes"] to your root conftest.py') in result.stdout.str()


BLOCK_EXTRAS = """
    import sys
    for name in ("fakeredis", "moto", "boto3", "respx", "pytest_httpserver", "psycopg",
                 "sqlalchemy", "testcontainers", "docker", "pymongo", "vcr"):
        sys.modules[name] = None  # makes `import name` fail as if not installed
"""


def test_importing_depfakes_needs_no_extra():
    code = textwrap.dedent(BLOCK_EXTRAS) + textwrap.dedent("""
        import depfakes, depfakes.plugin, depfakes.fixtures
        print(depfakes.__version__, sorted(depfakes.registry.names()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "['http', 'mongo', 'postgres', 'redis', 's3']" in out.stdout


def test_declaring_a_dependency_whose_extra_is_missing(project, pytester):
    project(
        """
        import pytest

        def test_plain():
            pass

        @pytest.mark.deps("redis")
        def test_a():
            pass

        @pytest.mark.deps("redis")
        def test_b():
            pass
        """,
        conftest=BLOCK_EXTRAS,
    )
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.re_match_lines([
        r"ERROR: depfakes: 'redis' needs the Python package 'fakeredis', which is not installed "
        r"\(.*\)\. Install it: pip install 'depfakes\[redis\]' \(declared by 2 test\(s\), "
        r"e\.g\. test_project\.py::test_a\)$"
    ])
    assert "Traceback" not in result.stderr.str()


QUEUE_PROVIDER = textwrap.dedent("""
    import collections
    import depfakes
    from depfakes import Option, Provider

    class QueueHandle:
        url: str  # declared, so env= mappings to it are checked at collection

        def __init__(self, maxlen, url):
            self.items = collections.deque(maxlen=maxlen)
            self.url = url

    class QueueProvider(Provider):
        name = "queue"
        handle_type = QueueHandle
        options = {"maxlen": Option(10, "Queue capacity.", type=int)}
        accepts_version = True
        events = []

        def start(self, ctx):
            self.version = ctx.version or "1"
            self.events.append(("start", ctx.version))

        def acquire(self, item, options):
            self.events.append(("acquire", item.name))
            return QueueHandle(options["maxlen"], f"queue://{self.version}/{item.name}")

        def release(self, handle):
            self.events.append(("release", list(handle.items)))

        def stop(self):
            self.events.append(("stop",))
""")


def test_third_party_provider_from_a_conftest(project, pytester):
    project(
        """
        import os
        import pytest
        from conftest import QueueProvider

        @pytest.mark.deps("queue:2", maxlen=2, env={"QUEUE_URL": "queue.url"})
        def test_uses_queue(deps):
            deps.queue.items.extend([1, 2, 3])
            assert list(deps.queue.items) == [2, 3]
            assert os.environ["QUEUE_URL"] == "queue://2/test_uses_queue"

        @pytest.mark.deps("queue")
        def test_default_options(deps):
            assert deps.queue.items.maxlen == 10

        def test_after():
            events = QueueProvider.events
            # One provider instance per version, both started during collection.
            assert ("start", "2") in events and ("start", None) in events
            per_test = [event for event in events if event[0] != "start"]
            i = per_test.index(("acquire", "test_uses_queue"))
            assert per_test[i + 1] == ("release", [2, 3])
            assert "QUEUE_URL" not in __import__("os").environ
        """,
        conftest=QUEUE_PROVIDER + "\ndepfakes.register(QueueProvider)\n",
    )
    result = pytester.runpytest_subprocess("--strict-markers", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["queue * 1 test *", "queue:2 * 1 test *"])


def test_third_party_provider_options_are_validated(project, pytester):
    project(
        """
        import pytest

        @pytest.mark.deps("queue", maxlen="big")
        def test_it():
            pass
        """,
        conftest=QUEUE_PROVIDER + "\ndepfakes.register(QueueProvider)\n",
    )
    result = pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(["*queue: option maxlen='big' must be int, not str"])


def test_registering_a_taken_name_needs_replace(project, pytester):
    project(
        "def test_it(): pass",
        conftest=QUEUE_PROVIDER + "\nQueueProvider.name = 'redis'\ndepfakes.register(QueueProvider)\n",
    )
    result = pytester.runpytest_subprocess()
    result.stderr.fnmatch_lines(["*a provider named 'redis' is already registered; "
                                 "pass replace=True to override it"])


def test_provider_from_the_entry_point_group(project, pytester, monkeypatch):
    site = pytester.mkdir("site")
    (site / "queue_provider.py").write_text(textwrap.dedent(QUEUE_PROVIDER))
    dist = site / "queue_provider-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: queue-provider\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[depfakes.providers]\nqueue = queue_provider:QueueProvider\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    project(
        """
        import pytest

        @pytest.mark.deps("queue", maxlen=3)
        def test_it(deps):
            assert deps.queue.items.maxlen == 3
        """
    )
    pytester.runpytest_subprocess("--strict-markers").assert_outcomes(passed=1)
