"""Every depfakes setting, and the one resolver that reads it.

Precedence (DESIGN.md §6): marker option > CLI flag > environment variable > ini > default.
Marker options are resolved by the marker module; this module covers the rest. Safety
switches (``safety=True``) are session settings that no marker may override.

A setting named ``s3_region`` is spelled ``--deps-s3-region`` on the command line,
``DEPFAKES_S3_REGION`` in the environment and ``depfakes_s3_region`` in ini.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pytest

SettingType = Literal["bool", "string", "float", "mapping", "lines", "list", "duration"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingError(ValueError):
    """A setting was given a value it cannot take."""


@dataclass(frozen=True)
class Setting:
    name: str
    help: str
    type: SettingType = "string"
    # A value, or a zero-argument callable for defaults that depend on the environment.
    default: Any = None
    cli: bool = True
    safety: bool = False
    choices: tuple[str, ...] | None = None
    # Extra command-line spellings, e.g. ("--record-mode",) for a flag other plugins may own.
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--deps-" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "DEPFAKES_" + self.name.upper()

    @property
    def ini(self) -> str:
        return "depfakes_" + self.name

    @property
    def dest(self) -> str:
        return "depfakes_" + self.name

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a raw CLI/env/ini value into this setting's type, or say what is wrong."""
        try:
            value = _PARSERS[self.type](raw)
        except ValueError as exc:
            raise SettingError(f"{source}: {exc}") from None
        if self.choices is not None and value not in self.choices:
            raise SettingError(
                f"{source}: {value!r} is not one of {', '.join(self.choices)}"
            )
        return value


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true/false (1/0, yes/no, on/off), got {raw!r}")


def _parse_lines(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = raw.replace(";", "\n").splitlines()
    return [str(line).strip() for line in raw if str(line).strip()]


def _parse_list(raw: Any) -> list[str]:
    """Lines, each of which may hold several entries separated by ';' or ','
    (pytest-recording's --allowed-hosts=a,b)."""
    lines = [raw] if isinstance(raw, str) else [str(line) for line in raw]
    return _parse_lines(";".join(lines).replace(",", ";"))


def _parse_mapping(raw: Any) -> dict[str, str]:
    items: Iterable[str] = (
        raw.replace(",", "\n").splitlines() if isinstance(raw, str) else _flatten(raw)
    )
    mapping: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def _flatten(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        yield from str(value).replace(",", "\n").splitlines()


_DURATION_UNITS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def _parse_duration(raw: Any) -> timedelta | None:
    """``90d``, ``12w``, ``36h`` (a bare number: days); empty: None (never)."""
    if isinstance(raw, timedelta) or raw is None:
        return raw
    text = str(raw).strip().lower()
    if not text:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([hdw]?)", text)
    if match is None:
        raise ValueError(f"expected a duration such as 90d, 12w or 36h, got {raw!r}")
    return timedelta(seconds=float(match[1]) * _DURATION_UNITS[match[2] or "d"])


def _parse_float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {raw!r}") from None


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "bool": _parse_bool,
    "string": lambda raw: str(raw).strip(),
    "float": _parse_float,
    "duration": _parse_duration,
    "mapping": _parse_mapping,
    "lines": _parse_lines,
    "list": _parse_list,
}


CORE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "strict",
        "Fail, instead of skip, tests whose dependency has no backend here "
        "(default: on when the CI environment variable is set).",
        type="bool",
        default=lambda: bool(os.environ.get("CI")),
        safety=True,
    ),
    Setting(
        "optional",
        "Dependencies that may be missing here even under --deps-strict: their tests skip "
        "with the reason (e.g. mongo on a CI machine that cannot run MongoDB). One per line "
        "(env and CLI: separated by ';').",
        type="lines",
        default=list,
        safety=True,
    ),
    Setting(
        "backend",
        "Force a backend per dependency, NAME=BACKEND, e.g. postgres=local or redis=docker "
        "(repeatable; env/ini take a comma-separated list).",
        type="mapping",
        default=dict,
    ),
    Setting(
        "reuse",
        "Keep servers running after the session and adopt them in the next one (keyed by "
        "project directory and server definition); `depfakes down --all` removes them.",
        type="bool",
        default=False,
    ),
    Setting(
        "report",
        "List what each test's dependencies cost (wait for the server, setup, teardown) in "
        "the terminal summary; the slowest setups are always named.",
        type="bool",
        default=False,
    ),
    Setting(
        "block_network",
        "Apply the network policy of 'http' tests to every test: only loopback, Unix "
        "sockets and allowed hosts.",
        type="bool",
        default=False,
        aliases=("--block-network",),
    ),
    Setting(
        "allow_hosts",
        "Hosts (names or IPs) tests may reach besides loopback, one per line (env and CLI: "
        "separated by ';' or ',').",
        type="list",
        default=list,
        aliases=("--allowed-hosts",),
    ),
    Setting(
        "django",
        "With pytest-django: \"auto\" puts Django's test database on depfakes' postgres "
        "(a template migrated once, a fresh database per test) when Django's settings name "
        "a PostgreSQL database; \"off\" leaves pytest-django alone. See depfakes/django_bridge.py.",
        default="auto",
        choices=("auto", "off"),
    ),
    Setting(
        "session_env",
        "Environment variables set for the whole session from a server's own address, one "
        "'VAR = dependency.attribute' per line (e.g. 'PG* = postgres', 'ADMIN_URL = "
        "postgres.dsn': its maintenance database), for code that makes its own databases "
        "there. The server starts for the session, whichever tests run.",
        type="lines",
        default=list,
        cli=False,
    ),
    Setting(
        "declare",
        "Dependencies every test under a path declares, one 'PATH = name, name' per line, "
        "PATH (a directory or a file) relative to the rootdir, e.g. 'tests/api = postgres'. "
        "Markers add to them and set their options.",
        type="lines",
        default=list,
        cli=False,
    ),
    Setting(
        "env",
        "Environment variables to set for each test from handle attributes, one "
        "'VAR = dependency.attribute' per line, e.g. 'REDIS_URL = redis.url'.",
        type="lines",
        default=list,
        cli=False,
    ),
)


def add_options(parser: pytest.Parser, settings: Iterable[Setting],
                owned_elsewhere: Iterable[str] = ()) -> None:
    """Put every setting in ``pytest --help`` (group ``depfakes``) and in ini; aliases in
    ``owned_elsewhere`` are left to the plugin that owns them."""
    owned = set(owned_elsewhere)
    group = parser.getgroup("depfakes", "depfakes: dependencies for tests")
    for setting in settings:
        help_text = f"{setting.help} [env {setting.env}, ini {setting.ini}]"
        ini_type: Literal["linelist", "string"] = (
            "linelist" if setting.type in ("lines", "list", "mapping") else "string")
        parser.addini(setting.ini, setting.help, type=ini_type)
        if not setting.cli:
            continue
        aliases = [alias for alias in setting.aliases if alias not in owned]
        flags = [setting.flag, *_free_aliases(parser, aliases)]
        if setting.type == "bool":
            group.addoption(*flags, action="store_const", const=True, dest=setting.dest,
                            default=None, help=help_text)
            group.addoption(setting.flag.replace("--deps-", "--deps-no-"), action="store_const",
                            const=False, dest=setting.dest, help=f"Turn {setting.flag} off.")
        elif setting.type == "mapping":
            group.addoption(*flags, action="append", dest=setting.dest, default=None,
                            metavar="NAME=VALUE", help=help_text)
        else:
            group.addoption(*flags, action="store", dest=setting.dest, default=None,
                            choices=setting.choices, help=help_text)


def _free_aliases(parser: pytest.Parser, aliases: Iterable[str]) -> list[str]:
    """Aliases another plugin has not claimed already (that plugin keeps its own)."""
    taken: set[str] = set()
    for group in parser._groups:  # no public API lists registered flags
        for option in group.options:
            taken.update(option.names())
    for option in parser._anonymous.options:
        taken.update(option.names())
    return [alias for alias in aliases if alias not in taken]


class Settings:
    """Reads settings with CLI > environment > ini > default precedence."""

    def __init__(
        self,
        config: pytest.Config,
        settings: Iterable[Setting],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._environ = os.environ if environ is None else environ
        self._settings = {setting.name: setting for setting in settings}
        self._cache: dict[str, tuple[Any, str]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._settings

    def get(self, name: str) -> Any:
        return self.lookup(name)[0]

    def source(self, name: str) -> str:
        """Where the value in force came from, for messages and ``depfakes doctor``."""
        return self.lookup(name)[1]

    def lookup(self, name: str) -> tuple[Any, str]:
        if name not in self._cache:
            self._cache[name] = self._resolve(self._settings[name])
        return self._cache[name]

    def validate_all(self) -> None:
        """Parse every setting now, so a bad value fails the session up front."""
        for name in self._settings:
            self.lookup(name)

    def _resolve(self, setting: Setting) -> tuple[Any, str]:
        cli_value = getattr(self._config.option, setting.dest, None) if setting.cli else None
        if cli_value is not None:
            return setting.parse(cli_value, setting.flag), setting.flag
        env_value = self._environ.get(setting.env)
        if env_value is not None:
            return setting.parse(env_value, setting.env), setting.env
        ini_value = self._ini(setting)
        if ini_value is not None:
            return setting.parse(ini_value, f"ini {setting.ini}"), f"ini {setting.ini}"
        return setting.default_value(), "default"

    def _ini(self, setting: Setting) -> Any:
        try:
            value = self._config.getini(setting.ini)
        except (ValueError, KeyError):  # registered after addoption ran: no ini key
            return None
        if value in ("", [], None):
            return None
        return value
