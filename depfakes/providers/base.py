"""What a provider is: the contract every dependency, built-in or third-party, implements.

A provider class describes one dependency (``name``, ``options``, ``settings``, the
packages it ``requires``). depfakes makes one instance per dependency and version per
session, calls ``start`` once (in a background thread), then ``acquire`` / ``release``
around every test that declares it, ``verify`` after the test body, and ``stop`` at the end.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from depfakes.config import Setting, Settings
from depfakes.errors import DepfakesError, MissingExtra

if TYPE_CHECKING:
    from depfakes.backends import LocalRecipe, Server, ServerInfo
    from depfakes.backends.shared import SharedRun

_MISSING: Any = object()


@dataclass(frozen=True)
class Option:
    """One keyword a provider accepts in ``@pytest.mark.deps(..., name=value)``.

    ``setting`` names a session setting that supplies the value when the marker does not,
    which gives the option the full marker > CLI > env > ini > default precedence.
    """

    default: Any
    help: str
    type: type | tuple[type, ...] = object
    choices: tuple[Any, ...] | None = None
    setting: str | None = None

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError with a message for the user if ``value`` does not fit."""
        if self.choices is not None and value not in self.choices:
            choices = ", ".join(repr(choice) for choice in self.choices)
            raise ValueError(f"option {name}={value!r} must be one of {choices}")
        if not isinstance(value, self.type):
            expected = _type_names(self.type)
            raise ValueError(
                f"option {name}={value!r} must be {expected}, not {type(value).__name__}"
            )


def _type_names(types: type | tuple[type, ...]) -> str:
    if isinstance(types, tuple):
        return " or ".join(t.__name__ for t in types)
    return types.__name__


@dataclass
class StartContext:
    """What a provider gets to start its session-level machinery."""

    name: str
    version: str | None
    settings: Settings
    config: pytest.Config
    provider_class: type[Provider]
    # A directory for this provider's files for the session (sockets, data dirs, logs).
    workdir: Path
    extras: dict[str, Any] = field(default_factory=dict)
    # Under pytest-xdist: the run's servers, shared by its workers.
    shared: SharedRun | None = None
    # Locks held until ``start`` returns (see ``server``).
    held: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # Says what the start is doing, for the status line a waiting test shows.
    status: Callable[[str], None] = lambda text: None

    def server(self, name: str, start: Callable[[], Server]) -> Server:
        """Start a server with ``start``, or under pytest-xdist adopt the one another
        worker started for the same ``name`` (say, the image). ``start()`` itself runs once
        per run, and the server is stopped after the last worker (Server.shared is True).

        Under xdist the worker holds the server's lock until ``start`` returns, so what the
        provider then builds on the server (a template database) is built once too: later
        workers find it there. Providers without a server never wait for each other."""
        self.status(f"starting {name}")
        if self.shared is None:
            return start()
        self.held.enter_context(self.shared.lock(name))
        return self.shared.server(name, start)


def run_init_target(ini_name: str, target: str | None, argument: Any) -> None:
    """Call the ``module:callable`` an ini init setting names (e.g. depfakes_postgres_init)."""
    if not target:
        return
    module, _, attr = target.partition(":")
    if not attr:
        raise MissingInitTarget(f"{ini_name} = {target!r}: expected 'module:callable'")
    function = importlib.import_module(module).__dict__[attr]
    try:
        takes_none = not inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin): pass the argument
        takes_none = False
    # An app's own seed script (``app.initial_data:main``) takes nothing and uses the app's
    # engine, which a stable URL points at the database being built.
    function() if takes_none else function(argument)


class InitHookFailed(DepfakesError):
    """An init hook (or the ini init target) raised while building the template."""

    def __init__(self, dependency: str, error: BaseException) -> None:
        import traceback

        # From the hook's own frame on: depfakes' and pluggy's frames say nothing.
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None and any(
                part in tb.tb_frame.f_code.co_filename for part in ("pluggy", "depfakes")):
            tb = tb.tb_next
        frames = "".join(traceback.format_exception(type(error), error, tb)).rstrip()
        where = getattr(error, "where", None) or (
            f"its init hook (pytest_depfakes_{dependency}_init or depfakes_{dependency}_init)")
        super().__init__(f"{where} failed while building the template:\n{frames}")


class MissingInitTarget(DepfakesError, ValueError):
    """An ini init setting that is not 'module:callable'."""


class Unavailable(Exception):
    """No backend can serve this dependency here; the message says how to get one.

    Tests that need it are skipped with this message, or failed under ``--deps-strict``.
    """


class Provider(ABC):
    name: ClassVar[str]
    # The type of the handle ``acquire`` returns; used for checking ``env=`` mappings.
    handle_type: ClassVar[type]
    options: ClassVar[Mapping[str, Option]] = {}
    settings: ClassVar[tuple[Setting, ...]] = ()
    # Importable modules the provider needs, and the pip extra that brings them.
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    # More modules its start imports (imported first, one provider at a time).
    preload: ClassVar[tuple[str, ...]] = ()
    # Whether ``"name:version"`` pins mean anything for this provider.
    accepts_version: ClassVar[bool] = False
    # The server it runs on, once started, for the "ready" line (None: in-process fake).
    description: str | None = None
    # The kind of real server it needs (None: in-process only). Backends add their
    # settings for it (postgres_url, postgres_image...) and serve it through obtain().
    server_info: ClassVar[ServerInfo | None] = None

    @classmethod
    def check_installed(cls) -> None:
        """Raise MissingExtra naming the extra to install when a required module is missing."""
        for module in cls.requires:
            # Found, not imported: importing SQLAlchemy alone would cost ~150 ms of start-up.
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # ValueError: blocked via sys.modules[m] = None
                found = False
            if not found:
                raise MissingExtra(cls.name, module, cls.extra,
                                   ImportError(f"No module named {module!r}")) from None

    @classmethod
    def check_version(cls, version: str) -> None:
        """Raise ValueError if this provider cannot honour ``version`` (checked at collection)."""
        if not cls.accepts_version:
            raise ValueError(f"'{cls.name}' does not take a version (got '{cls.name}:{version}')")

    @classmethod
    def diagnose(cls, settings: Settings) -> dict[str, tuple[bool, str]]:
        """For ``depfakes doctor``: backend -> (can it serve here, why / the fix).

        Checks without starting anything. In-process providers only need their packages.
        """
        try:
            cls.check_installed()
        except MissingExtra as exc:
            return {"in-process": (False, str(exc))}
        if cls.server_info is None:
            return {"in-process": (True, f"{', '.join(cls.requires) or 'nothing'} installed")}
        from depfakes.backends import registered

        return {name: backend.diagnose(cls, settings)
                for name, backend in registered().items() if backend.serves(cls)}

    @classmethod
    def local_recipe(cls, version: str | None, settings: Settings) -> LocalRecipe:
        """How to run this dependency's server from local binaries; providers that can
        override it (BackendUnavailable when the binaries are missing)."""
        from depfakes.backends import BackendUnavailable

        raise BackendUnavailable(f"{cls.name} cannot run from local binaries")

    @classmethod  # noqa: B027 - optional hook
    def probe(cls, url: str) -> None:
        """Connect to a server at ``url`` once (``depfakes doctor``); raise if it fails."""

    @classmethod
    def look_ahead(cls, config: pytest.Config, settings: Settings,
                   items: Sequence[pytest.Item]) -> contextlib.AbstractContextManager[None]:
        """Work to do once the session's tests are known (``items``: those that declare
        this dependency, in run order), alongside them, until the session ends. Providers
        that can override it; the default does nothing."""
        return contextlib.nullcontext()

    def start_server(self, ctx: StartContext) -> None:  # noqa: B027 - optional hook
        """Obtain only the server, before conftest.py loads (a stable URL needs its
        address then); ``start`` does the rest later. Providers that can override it."""

    def start(self, ctx: StartContext) -> None:  # noqa: B027 - optional hook
        """Prepare session-level state. Runs once, in a background thread."""

    @abstractmethod
    def acquire(self, item: pytest.Item, options: Mapping[str, Any]) -> Any:
        """Return this test's handle, isolated from every other test."""

    def release(self, handle: Any) -> None:  # noqa: B027 - optional hook
        """Undo everything ``acquire`` did for this test."""

    def verify(self, handle: Any) -> None:  # noqa: B027 - optional hook
        """Called after a passing test body; raise ``pytest.fail`` to fail the test."""

    def server_handle(self) -> Any:
        """A handle on the server itself rather than a test's database, for
        ``depfakes_session_env`` (code that makes its own databases there)."""
        raise DepfakesError(f"'{self.name}' has no server a session-wide variable could name "
                            "(depfakes_session_env); map it per test with depfakes_env")

    def stop(self) -> None:  # noqa: B027 - optional hook
        """Release session-level state."""
