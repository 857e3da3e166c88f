"""What suites written for pytest-recording and pytest-vcr say, served by depfakes when
those plugins are gone: the ``vcr`` marker (a test marked with it declares 'http' with
its cassette), their cassette layouts and fixtures (``vcr_config``, ``vcr_cassette_dir``,
``default_cassette_name`` / ``vcr_cassette_name``, ``vcr``), pytest-recording's flags
(``--record-mode`` with its ``rewrite`` mode, ``--block-network``, ``--allowed-hosts``
comma-separated), its ``block_network`` and ``default_cassette`` markers and its
``pytest_recording_configure`` hook (custom matchers).

When pytest-recording is loaded too (a gradual migration, a transitive dependency), it
keeps its own flags, markers and fixtures, and depfakes answers to its ``--deps-*``
spellings only: pytest starts either way, and one plugin owns each flag. With pytest-vcr
loaded, its ``vcr`` marker and fixtures stay its own too.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from depfakes.cassettes import CHOICE_KEY, CassetteChoice
from depfakes.state import SPEC_KEY

PLUGIN = "recording"  # pytest-recording's plugin name (its pytest11 entry point)
# Plugin name -> module, for -p <module>; "vcr" is pytest-vcr.
MODULES = {PLUGIN: "pytest_recording.plugin", "vcr": "pytest_vcr"}
# Their flags, which depfakes takes as aliases of its own settings when they are absent.
FLAGS = {PLUGIN: ("--record-mode", "--block-network", "--allowed-hosts"),
         "vcr": ("--vcr-record", "--vcr-record-mode", "--disable-vcr")}
_FORBIDDEN = "<>?%*:|\"'/\\"  # pytest-recording replaces these in cassette names with "-"


def loaded(pluginmanager: pytest.PytestPluginManager, plugin: str = PLUGIN) -> bool:
    """Whether pytest-recording (or pytest-vcr: ``plugin="vcr"``) is, or is about to be,
    loaded: entry points register one by one, so it may come after depfakes' options."""
    if pluginmanager.has_plugin(plugin) or pluginmanager.has_plugin(MODULES[plugin]):
        return True
    if pluginmanager.is_blocked(plugin) or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return plugin in _installed()


@functools.cache
def _installed() -> set[str]:  # reading every distribution's entry points costs ~5 ms
    return {entry.name for entry in entry_points(group="pytest11")}


def add_hookspecs(pluginmanager: pytest.PytestPluginManager) -> None:
    if not loaded(pluginmanager):
        pluginmanager.add_hookspecs(_Hooks)


def register(config: pytest.Config) -> None:
    """Serve the vocabulary, unless pytest-recording or pytest-vcr is there to (their
    fixtures and markers are theirs then: tests declare deps("http") to use depfakes')."""
    if loaded(config.pluginmanager) or loaded(config.pluginmanager, "vcr"):
        return
    for line in (
        "vcr(*extra_cassettes, **vcr_options): replay (or record) this test's cassette: "
        "declares depfakes' 'http' (pytest-recording's and pytest-vcr's marker)",
        "block_network(allowed_hosts=[...]): only loopback, Unix sockets and these hosts "
        "for this test (pytest-recording's marker)",
        "default_cassette(name): this test's cassette name (pytest-recording's marker)",
    ):
        config.addinivalue_line("markers", line)
    config.pluginmanager.register(sys.modules[__name__], "depfakes-vcr-compat")


def marked_hosts(item: pytest.Item) -> list[str] | None:
    """The hosts a ``block_network`` marker allows (None: no marker, or pytest-recording
    owns it)."""
    mark = item.get_closest_marker("block_network")
    if mark is None or loaded(item.config.pluginmanager):
        return None
    hosts = mark.kwargs.get("allowed_hosts") or []
    return hosts.split(",") if isinstance(hosts, str) else list(hosts)


class _Hooks:
    @pytest.hookspec
    def pytest_recording_configure(self, config: pytest.Config, vcr: Any) -> None:
        """pytest-recording's hook: register custom matchers, serializers... on the vcrpy
        ``VCR`` depfakes records and replays with (called once per session)."""


# --- served while this module is registered as a plugin --------------------------------


@pytest.hookimpl
def pytest_depfakes_declared(item: pytest.Item) -> list[str] | None:
    return ["http"] if item.get_closest_marker("vcr") is not None else None


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    # Before the test's dependencies are acquired: which cassette, and vcrpy's options.
    spec = request.node.stash.get(SPEC_KEY, None)
    if fixturedef.argname == "deps" and spec is not None and "http" in spec.versions:
        choice = _choice(request)
        if choice is not None:
            request.node.stash[CHOICE_KEY] = choice
    return (yield)


def _choice(request: pytest.FixtureRequest) -> CassetteChoice | None:
    item = request.node
    marks = list(item.iter_markers("vcr"))
    layout = _layout(request.config, bool(marks))
    options: dict[str, Any] = dict(request.getfixturevalue("vcr_config"))
    for mark in reversed(marks):  # the closest marker's options win
        options.update(mark.kwargs)
    if layout == "depfakes":
        return CassetteChoice(None, (), options) if options or marks else None
    # Both plugins let vcr_config's cassette_library_dir win over vcr_cassette_dir.
    directory = Path(options.pop("cassette_library_dir", None) or
                     request.getfixturevalue("vcr_cassette_dir"))
    if layout == "pytest-vcr":  # its names always end in .yaml, whatever the serializer
        name, suffix = str(request.getfixturevalue("vcr_cassette_name")), ".yaml"
    else:
        name = str(request.getfixturevalue("default_cassette_name"))
        suffix = "." + str(options.get("serializer", "yaml"))
    path = directory / _bounded(name, suffix)
    if path.suffix != suffix:
        path = path.with_name(path.name + suffix)
    extra = tuple(p if p.is_absolute() else directory / p
                  for mark in marks for p in map(Path, mark.args))
    return CassetteChoice(path, extra, options)


def _layout(config: pytest.Config, marked: bool) -> str:
    from depfakes.state import session_state

    layout = str(session_state(config).runtime.settings.get("cassette_layout"))
    if layout == "auto":
        return "pytest-recording" if marked else "depfakes"
    return layout


def _bounded(name: str, suffix: str) -> str:
    """pytest-recording's cut of a name too long for a file name."""
    limit = 255
    if len(name) + len(suffix) <= limit:
        return name
    digest = hashlib.md5(name.encode()).hexdigest()
    return f"{name[:limit - len(suffix) - len(digest) - 3]}...{digest}"


@pytest.fixture
def vcr_config() -> dict[str, Any]:
    """vcrpy options for the test's cassette (match_on, filter_headers,
    before_record_request, ...), as in pytest-recording and pytest-vcr; override it in a
    conftest, at any scope. The record mode is depfakes' session setting, not an option."""
    return {}


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """The module's cassette directory: ``<test dir>/cassettes/<module>`` in
    pytest-recording's layout, ``<test dir>/cassettes`` in pytest-vcr's."""
    module = Path(str(request.node.path))
    if _layout(request.config, True) == "pytest-vcr":
        return str(module.parent / "cassettes")
    return str(module.parent / "cassettes" / module.stem)


@pytest.fixture
def default_cassette_name(request: pytest.FixtureRequest) -> str:
    """pytest-recording's cassette name: ``Class.test[params]`` (or the
    ``default_cassette`` marker's), file-name-safe."""
    mark = request.node.get_closest_marker("default_cassette")
    if mark is not None:
        return str(mark.args[0])
    name = request.node.name
    if request.cls is not None:
        name = f"{request.cls.__name__}.{name}"
    for char in _FORBIDDEN:
        name = name.replace(char, "-")
    return str(name)


@pytest.fixture
def vcr_cassette_name(request: pytest.FixtureRequest) -> str:
    """pytest-vcr's cassette name: ``Class.test`` or ``test``, as the test is named."""
    name = request.node.name
    return f"{request.cls.__name__}.{name}" if request.cls is not None else str(name)


@pytest.fixture
def vcr(request: pytest.FixtureRequest) -> Any:
    """pytest-recording's ``vcr``: the test's vcrpy cassette (None when it has none). In
    pytest-vcr's layout, pytest-vcr's: a vcrpy ``VCR`` for cassettes the test opens
    itself (``vcr.use_cassette("name")``, found in ``vcr_cassette_dir``), recording and
    replaying as depfakes does. Changing its record_mode changes only those cassettes."""
    if _layout(request.config, True) == "pytest-vcr":
        recorder = copy.copy(request.getfixturevalue("http").recorder)
        recorder.cassette_library_dir = request.getfixturevalue("vcr_cassette_dir")
        recorder.path_transformer = recorder.ensure_suffix(".yaml")
        return recorder
    return request.getfixturevalue("vcr_cassette")


@pytest.fixture
def vcr_cassette(request: pytest.FixtureRequest) -> Any:
    """pytest-vcr's ``vcr_cassette``: the test's vcrpy cassette (None when it has none)."""
    if "http" not in request.getfixturevalue("deps"):
        return None
    return request.getfixturevalue("http").cassette
