"""depfakes' pytest hooks: options, markers, collection-time validation, summary.

Everything else lives in its own module; this file only wires it into pytest.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from depfakes import cassette_use, registry, respx_compat, stable_url, vcr_compat
from depfakes.backends import validate_choices
from depfakes.backends.shared import WORKERINPUT_KEY, SharedRun
from depfakes.config import CORE_SETTINGS, SettingError, Settings, add_options
from depfakes.deps import env_line_parts, expand_env_lines, parse_env_lines, verify
from depfakes.errors import DepfakesError, MarkerError, MissingExtra
from depfakes.fixtures import (  # noqa: F401 - registered as this plugin's fixtures
    _depfakes_autouse,
    _depfakes_session_env,
    deps,
    http,
    mongo,
    postgres,
    redis,
    requested_dependencies,
    s3,
)
from depfakes.marker import MARKER, declared_under, parse_declare_lines, spec_for
from depfakes.progress import report_lines
from depfakes.runtime import Runtime
from depfakes.state import (
    DEPS_KEY,
    NEXT_ITEM_KEY,
    SPEC_KEY,
    STATE_KEY,
    SessionState,
    session_state,
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from depfakes import hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    vcr_compat.add_hookspecs(pluginmanager)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    owned = [flag for plugin, flags in vcr_compat.FLAGS.items()
             if vcr_compat.loaded(pluginmanager, plugin) for flag in flags]
    add_options(parser, [*CORE_SETTINGS, *registry.all_settings()], owned_elsewhere=owned)
    parser.getgroup("depfakes").addoption(
        "--deps-doctor", action="store_true", dest="depfakes_doctor",
        help="With --collect-only: report which backend serves each dependency (what "
             "`depfakes doctor` runs).")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Before conftest.py imports the app: a stable database URL must be in the
    # environment by then (depfakes_postgres_stable_url).
    stable_url.start(early_config)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names, **options): provision dependencies (e.g. \"postgres\", \"redis:7\") "
        "for this test, isolated and cleaned up by depfakes",
    )
    for name in registry.names():
        _register_dependency_marker(config, name)
    vcr_compat.register(config)
    settings = Settings(config, [*CORE_SETTINGS, *registry.all_settings()])
    try:
        if settings.get("django") == "auto":
            from depfakes import django_bridge

            django_bridge.register(config)  # before validate_all: --reuse-db is --deps-reuse
        settings.validate_all()
        unknown = set(settings.get("optional")) - set(registry.names())
        if unknown:
            raise ValueError(f"depfakes_optional names {', '.join(sorted(unknown))}: known "
                             f"dependencies are {', '.join(registry.names())}")
        env_lines = expand_env_lines(settings.get("env"))
        parse_env_lines(env_lines)
        session_env_lines = expand_env_lines(settings.get("session_env"))
        parse_env_lines(session_env_lines, "depfakes_session_env")
        declared_paths = parse_declare_lines(settings.get("declare"), config.rootpath)
        validate_choices(settings.get("backend"),
                         {name: registry.get(name) for name in registry.names()})
        if _installed("http"):  # respx_mock tests declare http only where it can run
            respx_compat.register(config, settings.get("respx_aliases"))
    except (SettingError, ValueError, DepfakesError) as exc:
        raise pytest.UsageError(f"depfakes: {exc}") from None
    workerinput = getattr(config, "workerinput", {})  # set on pytest-xdist workers
    shared = (SharedRun.from_workerinput(workerinput[WORKERINPUT_KEY])
              if WORKERINPUT_KEY in workerinput else None)
    early = config.stash.get(stable_url.EARLY_KEY, None)  # started a server already
    runtime = early or Runtime(config, settings, shared)
    runtime.settings, runtime.shared = settings, shared or runtime.shared
    config.stash[STATE_KEY] = SessionState(
        runtime, env_lines, session_env_lines,
        shared_run=runtime.shared if early is not None and shared is None else None,
        declared_paths=declared_paths)
    cassette_use.start_run(config)  # what `depfakes cassettes check --unused` reports


def _installed(name: str) -> bool:
    try:
        registry.get(name).check_installed()
    except MissingExtra:
        return False
    return True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    # pytest-xdist's controller, for each worker it starts: share one server per dependency.
    state = session_state(node.config)
    if state.shared_run is None:
        state.shared_run = SharedRun.create()
    node.workerinput[WORKERINPUT_KEY] = state.shared_run.to_workerinput()


def pytest_itemcollected(item: pytest.Item) -> None:
    # Start servers while the rest of the suite is still being collected, for tests that
    # -m / -k (often in addopts) will not deselect.
    config = item.config
    if config.option.collectonly:
        return
    try:
        spec = spec_for(item, requested_dependencies(item))
    except (DepfakesError, KeyError):
        return  # reported with the other marker errors after collection
    if spec.versions and _selected(item, list(spec.versions)):
        _start(config, spec.versions.items())


def _selected(item: pytest.Item, dependencies: list[str]) -> bool:
    """Whether -m and -k keep ``item``, judged the way pytest will (with the dependency
    markers depfakes adds after collection). pytest's matchers are not public API: if they
    change, the start waits for the end of collection, as a selection always did."""
    option = item.config.option
    if not (option.markexpr or option.keyword):
        return True
    try:
        from _pytest.mark import KeywordMatcher, MarkMatcher
        from _pytest.mark.expression import Expression

        added = [getattr(pytest.mark, name).mark for name in dependencies]
        if option.markexpr and not Expression.compile(option.markexpr).evaluate(
                MarkMatcher.from_markers([*item.iter_markers(), *added])):
            return False
        if option.keyword:
            names = set(KeywordMatcher.from_item(item)._names) | set(dependencies)
            return bool(Expression.compile(option.keyword.lstrip()).evaluate(
                KeywordMatcher(names)))
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Not tryfirst: conftest hooks (which run first) may add deps markers, and this still
    # runs before pytest's own `-m` deselection. Markers added later still count: the
    # test reads its declaration again when it sets up (fixtures.current_spec).
    errors: list[str] = []
    missing: dict[str, tuple[MissingExtra | None, list[str]]] = {}
    for item in items:
        try:
            spec = spec_for(item, requested_dependencies(item))
        except MarkerError as exc:
            errors.append(f"{item.nodeid}: {exc}")
            continue
        for name in spec.versions:
            _check_installed(name, item.nodeid, missing)
            _register_dependency_marker(config, name)
            item.add_marker(name)
        item.stash[SPEC_KEY] = spec
    errors.extend(_missing_extra_lines(missing))
    if errors:
        raise pytest.UsageError("depfakes: " + "\n".join(errors))


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        if session.config.option.depfakes_doctor:
            from depfakes import doctor

            doctor.report(session)
        return
    declaring: dict[str, list[pytest.Item]] = {}
    for item in session.items:
        spec = item.stash.get(SPEC_KEY, None)
        if spec:
            _start(session.config, spec.versions.items())
            for name in spec.versions:
                declaring.setdefault(name, []).append(item)
    state = session_state(session.config)
    for name, items in declaring.items():
        state.alongside.enter_context(
            registry.get(name).look_ahead(session.config, state.runtime.settings, items))
    if session.items and state.session_env_lines:  # their servers serve every test
        _start(session.config, [(env_line_parts(line)[1], None)
                                for line in state.session_env_lines])


def pytest_depfakes_declared(item: pytest.Item) -> list[str] | None:
    state = item.config.stash.get(STATE_KEY, None)  # depfakes_declare
    return declared_under(item.path, state.declared_paths) if state else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    item.stash[NEXT_ITEM_KEY] = nextitem  # a database scope wider than a test looks ahead


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    yield  # a failing body raises here, and needs no further verdict
    opened = item.stash.get(DEPS_KEY, None)
    if opened is not None:
        verify(opened)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from depfakes.doctor import FAILED_KEY

    if session.config.stash.get(FAILED_KEY, False):  # depfakes doctor: a declared
        session.exitstatus = pytest.ExitCode.TESTS_FAILED  # dependency cannot run here
    workeroutput = getattr(session.config, "workeroutput", None)  # an xdist worker
    if workeroutput is not None:
        workeroutput["depfakes"] = session_state(session.config).runtime.export()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    # pytest-xdist's controller: the summary covers every worker's tests.
    exported = getattr(node, "workeroutput", {}).get("depfakes")
    if exported:
        session_state(node.config).runtime.merge(exported)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(STATE_KEY, None)
    if state is None or not state.runtime.costs:
        return
    runtime = state.runtime
    terminalreporter.section("depfakes")
    for line in report_lines(runtime.start_seconds, runtime.costs,
                             every_test=runtime.settings.get("report")):
        terminalreporter.write_line(line)


def pytest_unconfigure(config: pytest.Config) -> None:
    stable_url.restore(config)
    state = config.stash.get(STATE_KEY, None)
    if state is not None:
        state.alongside.close()
        state.runtime.stop()
        if state.shared_run is not None:  # the xdist controller, after its workers
            state.shared_run.stop_all()


def _start(config: pytest.Config, versions: object) -> None:
    runtime = session_state(config).runtime
    for name, version in versions:  # type: ignore[attr-defined]
        runtime.prepare(name, version)


def _check_installed(name: str, nodeid: str,
                     missing: dict[str, tuple[MissingExtra | None, list[str]]]) -> None:
    """Note which tests declare a dependency whose packages are missing (checked once)."""
    if name not in missing:
        try:
            registry.get(name).check_installed()
            missing[name] = (None, [])
        except MissingExtra as exc:
            missing[name] = (exc, [])
    missing[name][1].append(nodeid)


def _missing_extra_lines(missing: dict[str, tuple[MissingExtra | None, list[str]]]) -> list[str]:
    return [f"{exc} (declared by {len(nodeids)} test(s), e.g. {nodeids[0]})"
            for exc, nodeids in missing.values() if exc is not None]


def _register_dependency_marker(config: pytest.Config, name: str) -> None:
    registered = config.stash.setdefault(_MARKERS_KEY, set())
    if name not in registered:
        registered.add(name)
        config.addinivalue_line("markers", f"{name}: test uses the {name} dependency (depfakes)")


_MARKERS_KEY = pytest.StashKey[set[str]]()
