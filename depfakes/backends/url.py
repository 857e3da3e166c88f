"""The ``url`` backend: a server that already exists, named by a URL.

depfakes only creates things there under its session's names and, through the lease,
drops only what belongs to sessions that are gone, on this machine or any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from depfakes.backends import Backend, BackendUnavailable, Server, ServerInfo, ServerSpec, redact
from depfakes.config import Setting
from depfakes.errors import DepfakesError

if TYPE_CHECKING:
    from depfakes.config import Settings
    from depfakes.providers.base import Provider, StartContext


class UrlBackend(Backend):
    name = "url"
    summary = "an existing server, by URL"

    @classmethod
    def settings_for(cls, dependency: str, info: ServerInfo) -> tuple[Setting, ...]:
        if info.url_scheme is None:
            return ()
        return (Setting(f"{dependency}_url", f"An existing {dependency} server to use "
                        f"({info.url_scheme}:// URL of a user allowed to create and drop "
                        "databases); selects the url backend."),)

    @classmethod
    def serves(cls, provider: type[Provider]) -> bool:
        return provider.server_info is not None and provider.server_info.url_scheme is not None

    @classmethod
    def diagnose(cls, provider: type[Provider], settings: Settings) -> tuple[bool, str]:
        try:
            url = _configured(provider.name, settings)
            server = server_from_url(url, provider)
        except BackendUnavailable as exc:
            return False, str(exc)
        try:
            provider.probe(url)
        except Exception as exc:
            return False, f"{server.description} does not answer: {_first_line(exc)}"
        return True, f"{server.description} answers"

    def start(self, spec: ServerSpec, ctx: StartContext) -> Server:
        url = _configured(spec.dependency, ctx.settings)
        server = server_from_url(url, ctx.provider_class)
        try:
            spec.ready(url)
        except Exception as exc:
            raise DepfakesError(f"DEPFAKES_{spec.dependency.upper()}_URL "
                                f"({server.description}) does not answer: "
                                f"{_first_line(exc)}") from None
        return server


def _configured(dependency: str, settings: Settings) -> str:
    url = settings.get(f"{dependency}_url")
    if not url:
        raise BackendUnavailable(f"set DEPFAKES_{dependency.upper()}_URL to use an existing "
                                 "server")
    return str(url)


def server_from_url(url: str, provider: type[Provider]) -> Server:
    assert provider.server_info is not None
    try:
        parts = urlsplit(url)
        port = parts.port or provider.server_info.port
    except ValueError:
        raise BackendUnavailable(f"{redact(url)!r} has an invalid port") from None
    if not parts.hostname and "host=" not in parts.query:
        raise BackendUnavailable(f"{redact(url)!r} is not a server URL (expected "
                                 f"{provider.server_info.url_scheme}://host:port/...)")
    from depfakes.network import allow_server_host

    allow_server_host(parts.hostname or "")  # tests that also declare 'http' reach it
    return Server("url", parts.hostname or "", port, url, f"url {redact(url)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact_text(lines[0] if lines else type(exc).__name__)


def redact_text(text: str) -> str:
    """A driver's message with any password it quotes masked (libpq echoes the DSN)."""
    import re

    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
