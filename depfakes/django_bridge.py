"""pytest-django on depfakes' PostgreSQL: Django's test database is depfakes'.

With pytest-django installed and a PostgreSQL database in Django's settings (and
``depfakes_django`` not ``off``), this plugin, registered by depfakes at configure time:

- declares 'postgres' for every test that uses Django's database (the ``django_db``
  marker, or a fixture that needs ``db`` / ``transactional_db``);
- builds the template with Django's ``migrate`` once per session (kept by --deps-reuse,
  which pytest-django's ``--reuse-db`` turns on, and rebuilt when a migration changes). It
  runs on pytest's main thread, where pytest-django lets code reach the database, and
  through the ``django_db_setup`` fixture, so a project's override of it that loads data
  loads it into the template: every test starts with it;
- points Django's connections at the test's own database before pytest-django opens its
  transaction, and closes every connection Django opened, in any thread (asgiref's
  ``sync_to_async`` thread keeps its own), before that database is reset;
- gives a Django ``TestCase`` class one database for the class, as Django's runner would.

Django reads its settings once, at startup; the connections share the ``DATABASES``
dicts, so re-pointing them is an update of those dicts (what Django's test runner does).
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from depfakes.errors import DepfakesError
from depfakes.state import session_state

if TYPE_CHECKING:
    from depfakes.providers.base import Provider
    from depfakes.providers.postgres import PostgresHandle

# pytest-django's fixture behind the django_db marker and the db / transactional_db /
# live_server fixtures, and its class fixture for Django's TestCase classes. Observed
# (pytest_fixture_setup), never overridden.
DATABASE_FIXTURE = "_django_db_helper"
TEST_CASE_FIXTURE = "_django_setup_unittest"
PLUGIN_NAME = "depfakes-django"


def register(config: pytest.Config) -> None:
    """Install the bridge when pytest-django runs Django with a PostgreSQL database."""
    aliases = _postgres_aliases(config)
    if not aliases:
        return
    # pytest-django's --reuse-db keeps the test database between runs: so does depfakes'.
    if getattr(config.option, "reuse_db", False) and config.option.depfakes_reuse is None:
        config.option.depfakes_reuse = True
    config.pluginmanager.register(DjangoBridge(config, aliases), PLUGIN_NAME)
    config.pluginmanager.register(sys.modules[__name__], f"{PLUGIN_NAME}-fixtures")


def _postgres_aliases(config: pytest.Config) -> list[str]:
    if config.pluginmanager.get_plugin("django") is None:
        return []
    from pytest_django.lazy_django import django_settings_is_configured

    if not django_settings_is_configured():
        return []
    from django.db import connections

    return [alias for alias in connections if connections[alias].vendor == "postgresql"]


class DjangoBridge:
    def __init__(self, config: pytest.Config, aliases: list[str]) -> None:
        from django.db.backends.signals import connection_created

        self._config = config
        self._aliases = aliases
        self.building = False  # the template: django_db_setup migrates it
        self._migrated = False
        # Every connection wrapper Django opens, whatever the thread.
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()
        connection_created.connect(self._note_connection, weak=False)

    def _note_connection(self, sender: Any, connection: Any, **kwargs: Any) -> None:
        self._opened.add(connection)

    # --- declaring and building ------------------------------------------------------

    @pytest.hookimpl
    def pytest_depfakes_declared(self, item: pytest.Item) -> list[str] | None:
        uses = item.get_closest_marker("django_db") is not None or \
            DATABASE_FIXTURE in getattr(item, "fixturenames", ())
        return ["postgres"] if uses else None

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # Django TestCase classes get their database from the class fixture, not as a
        # declared dependency: start the server now all the same, while pytest collects.
        from pytest_django.django_compat import is_django_unittest

        if any(is_django_unittest(item) and getattr(item.cls, "databases", None)  # type: ignore[attr-defined]
               for item in session.items):
            session_state(self._config).runtime.prepare("postgres", None)

    @pytest.hookimpl
    def pytest_depfakes_postgres_template_key(self, config: pytest.Config) -> str:
        return migrations_key(_use_migrations(config))

    @pytest.hookimpl(tryfirst=True)  # before the project's own hooks, which may add rows
    def pytest_depfakes_postgres_init(self, dsn: str) -> None:
        runtime = session_state(self._config).runtime
        runtime.main_thread.run(lambda item: self._build(item, dsn))

    def _build(self, item: pytest.Item | None, dsn: str) -> None:
        """On the main thread: migrate the template through ``django_db_setup``."""
        self._point(_address(dsn))
        # pytest's request of the waiting test: a session fixture is resolved through one.
        request = getattr(item, "_request", None)
        self.building, self._migrated = True, False
        try:
            if request is not None:
                request.getfixturevalue("django_db_setup")
            if not self._migrated:  # resolved before, or no request to resolve it with
                with _blocker(self._config).unblock():
                    self.migrate(_use_migrations(self._config))
        except Exception as exc:
            exc.where = "Django's migrate (depfakes' Django bridge, or your django_db_setup)"  # type: ignore[attr-defined]
            raise
        finally:
            self.building = False
            self.close_connections()  # a template must have no connections to be copied

    def migrate(self, use_migrations: bool) -> None:
        """What Django's test runner does in a new test database, in the one Django points
        at: migrate (or syncdb, with --nomigrations or TEST MIGRATE False), cache tables."""
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connections

        self._migrated = True
        for alias in self._aliases:
            test_settings = connections[alias].settings_dict.get("TEST", {})
            if test_settings.get("MIRROR"):
                continue  # the same database as the one it mirrors
            saved = settings.MIGRATION_MODULES
            if not use_migrations or test_settings.get("MIGRATE") is False:
                from django.apps import apps

                settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
            try:
                call_command("migrate", database=alias, interactive=False, verbosity=0,
                             run_syncdb=True)
            finally:
                settings.MIGRATION_MODULES = saved
            call_command("createcachetable", database=alias)

    # --- each test --------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: pytest.FixtureRequest
                             ) -> Iterator[Any]:
        if fixturedef.argname == DATABASE_FIXTURE and not _is_test_case(request):
            self._use(request.getfixturevalue("postgres"))
            request.addfinalizer(self.close_connections)
        elif fixturedef.argname == TEST_CASE_FIXTURE and _is_test_case(request) and \
                request.cls.databases:
            self._class_database(request)
        return (yield)

    def _use(self, handle: PostgresHandle) -> None:
        if handle.isolation != "database":
            raise DepfakesError(
                "Django's tests need their own database: pytest-django runs each test in "
                "its own transaction already. Drop isolation=\"transaction\" for them.")
        self.close_connections()  # to the database they were pointed at before
        self._point(_address(handle.dsn))

    def _class_database(self, request: pytest.FixtureRequest) -> None:
        """A Django TestCase class: one database for the class (its setUpClass data and
        its tests' savepoints live there), released after the class."""
        runtime = session_state(self._config).runtime
        node: Any = request.node
        provider: Provider = runtime.provider_for(node, "postgres", None)
        handle = provider.acquire(node, runtime.resolve_options(provider, {}))

        def release() -> None:
            self.close_connections()
            provider.release(handle)

        request.addfinalizer(release)
        self._use(handle)

    def close_connections(self) -> None:
        """Close every connection Django opened, in any thread: its database is about to
        be reset, dropped, or swapped for another."""
        import django.db

        for wrapper in list(self._opened):
            if wrapper.connection is None:
                continue
            wrapper.inc_thread_sharing()  # closing another thread's is allowed this way
            try:
                with contextlib.suppress(django.db.Error):  # already broken: it is gone
                    wrapper.close()
            finally:
                wrapper.dec_thread_sharing()

    def _point(self, address: dict[str, str]) -> None:
        from django.db import connections

        for alias in self._aliases:
            connections.settings[alias].update(address)


# Registered with the bridge (this module is a plugin too, for its fixture): pytest
# prefers a later plugin's fixture of the same name, so this one replaces pytest-django's.
@pytest.fixture(scope="session")
def django_db_setup(request: pytest.FixtureRequest, django_db_blocker: Any,
                    django_db_use_migrations: bool) -> None:
    """Django's test databases are depfakes' (this replaces pytest-django's fixture, which
    would create them on the server Django's settings name): migrated into the template
    while it is built. An override of this fixture in your conftest runs then too, so what
    it loads is in every test's database."""
    bridge = request.config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(bridge, DjangoBridge) and bridge.building:
        with django_db_blocker.unblock():
            bridge.migrate(django_db_use_migrations)


def _use_migrations(config: Any) -> bool:
    return not config.getoption("nomigrations", False)  # pytest-django's --nomigrations


def _is_test_case(request: pytest.FixtureRequest) -> bool:
    from pytest_django.django_compat import is_django_unittest

    return is_django_unittest(request)


def _blocker(config: pytest.Config) -> Any:
    from pytest_django.plugin import blocking_manager_key

    return config.stash[blocking_manager_key]


def _address(dsn: str) -> dict[str, str]:
    """Django's HOST/PORT/USER/PASSWORD/NAME for a libpq URL."""
    from depfakes.providers import postgres_driver

    parts = postgres_driver.conninfo(dsn)
    return {"HOST": str(parts.get("host") or ""), "PORT": str(parts.get("port") or ""),
            "USER": str(parts.get("user") or ""), "PASSWORD": str(parts.get("password") or ""),
            "NAME": str(parts["dbname"])}


def migrations_key(use_migrations: bool) -> str:
    """What Django builds the template from: its version, the installed apps, and every
    migration file (or, without migrations, every models module)."""
    import django
    from django.apps import apps
    from django.conf import settings

    digest = hashlib.sha256(f"{django.__version__} {use_migrations}".encode())
    for app in apps.get_app_configs():
        digest.update(app.name.encode())
        for path in _schema_files(app, settings.MIGRATION_MODULES, use_migrations):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def _schema_files(app: Any, migration_modules: dict[str, Any], use_migrations: bool
                  ) -> list[Path]:
    if not use_migrations:
        module = getattr(app, "models_module", None)
        return [Path(module.__file__)] if module is not None and module.__file__ else []
    module_name = migration_modules.get(app.label, f"{app.name}.migrations")
    if module_name is None:
        return []
    import importlib.util

    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(module_name)
        if spec is not None and spec.submodule_search_locations:
            return sorted(path for location in spec.submodule_search_locations
                          for path in Path(location).glob("*.py"))
    return []
