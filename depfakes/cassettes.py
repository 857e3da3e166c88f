"""vcrpy wiring: where cassettes live, record modes, what is never recorded, scrubbing,
and the messages for a request that is not in the cassette or a cassette that is broken.

Scrubbing runs on every request vcrpy sees, including the ones it matches against the
cassette on replay, so a scrubbed value (a token in the query, say) still matches.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from depfakes.errors import DepfakesError
from depfakes.network import is_loopback

RECORD_MODES = ("none", "once", "new_episodes", "all")
PLACEHOLDER = "DEPFAKES-SCRUBBED"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                            "x-api-key", "x-auth-token", "x-amz-security-token"})
_SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "pwd", "signature", "sig",
                 "credential", "credentials", "auth", "apikey", "session")
_SECRET_SUFFIXES = ("token", "key", "secret", "password", "signature")


class BrokenCassette(DepfakesError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"depfakes http: cassette {path} is broken: {problem}. Fix or delete "
                         "it (depfakes never overwrites a broken cassette).")


def is_secret_name(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a header, parameter or JSON field name looks like it holds a secret."""
    lowered = name.lower()
    if lowered in SECRET_HEADERS or lowered in {e.lower() for e in extra}:
        return True
    parts = [p for p in re.split(r"[^a-z0-9]+", lowered) if p]
    return any(p in _SECRET_WORDS for p in parts) or lowered.endswith(_SECRET_SUFFIXES)


def cassette_path(root: Path, nodeid: str, shared_name: str | None) -> Path:
    """``root/<module path without .py>/<test name>.yaml``, or ``root/<name>.yaml`` when the
    marker names a shared cassette. Parametrized ids become stable, valid file names."""
    if shared_name:
        return root / f"{_safe(shared_name)}.yaml"
    module, _, name = nodeid.partition("::")
    module_path = Path(module).with_suffix("")
    return root / module_path / f"{_safe(name.replace('::', '.'))}.yaml"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-\[\]]", "_", name).strip(".") or "cassette"


@dataclass
class Scrubber:
    extra_names: tuple[str, ...] = ()
    # Project rules (the pytest_depfakes_scrub_* hooks), run after the built-in ones.
    more_request: Callable[[Any], Any] | None = None
    more_response: Callable[[Any], Any] | None = None

    def request(self, request: Any) -> Any:
        for header in list(request.headers):
            if is_secret_name(header, self.extra_names):
                request.headers[header] = PLACEHOLDER
        request.uri = self._scrub_url(request.uri)
        request.body = self._scrub_body(request.body, request.headers.get("Content-Type", ""))
        if self.more_request is not None:
            self.more_request(request)
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        response = copy.deepcopy(response)  # the client may still read the original
        headers = response.get("headers", {})
        for header in list(headers):
            if is_secret_name(header, self.extra_names):
                headers[header] = [PLACEHOLDER]
        content_type = " ".join(_first(headers, "content-type"))
        body = response.get("body", {})
        if isinstance(body, dict) and "string" in body:
            body["string"] = self._scrub_body(body["string"], content_type)
        if self.more_response is not None:
            self.more_response(response)
        return response

    def _scrub_url(self, url: str) -> str:
        parts = urlsplit(url)
        if not parts.query:
            return url
        query = [(k, PLACEHOLDER if is_secret_name(k, self.extra_names) else v)
                 for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit(parts._replace(query=urlencode(query, safe=PLACEHOLDER)))

    def _scrub_body(self, body: Any, content_type: str) -> Any:
        if not body:
            return body
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        if "json" in content_type or text.lstrip()[:1] in ("{", "["):
            try:
                scrubbed = json.dumps(self._scrub_json(json.loads(text)))
            except ValueError:
                return body
        elif "x-www-form-urlencoded" in content_type:
            pairs = parse_qsl(text, keep_blank_values=True)
            scrubbed = urlencode([(k, PLACEHOLDER if is_secret_name(k, self.extra_names) else v)
                                  for k, v in pairs])
        else:
            return body
        return scrubbed.encode() if isinstance(body, bytes) else scrubbed

    def _scrub_json(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: PLACEHOLDER if is_secret_name(str(k), self.extra_names) and
                    not isinstance(v, (dict, list)) else self._scrub_json(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_json(item) for item in value]
        return value


def _first(headers: dict[str, Any], name: str) -> list[str]:
    for key, values in headers.items():
        if key.lower() == name:
            return values if isinstance(values, list) else [values]
    return []


def check_loadable(path: Path) -> None:
    """Raise BrokenCassette unless ``path`` is missing or a well-formed vcrpy cassette.

    vcrpy treats an unreadable cassette as empty and may record over it; this stops that.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key in _known_good:  # a shared cassette is read once, not once per test
        return
    import yaml

    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BrokenCassette(path, " ".join(str(exc).split())) from None
    problem = _structure_problem(data)
    if problem:
        raise BrokenCassette(path, problem)
    _known_good.add(key)


_known_good: set[tuple[str, int, int]] = set()


def _structure_problem(data: Any) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("interactions"), list):
        return "expected a mapping with an 'interactions' list"
    for number, interaction in enumerate(data["interactions"], start=1):
        request = interaction.get("request") if isinstance(interaction, dict) else None
        response = interaction.get("response") if isinstance(interaction, dict) else None
        if not isinstance(request, dict) or not {"method", "uri"} <= request.keys():
            return f"interaction {number} has no request with a method and uri"
        if not isinstance(response, dict) or "status" not in response:
            return f"interaction {number} has no response with a status"
    return None


def build_vcr(record_mode: str, scrubber: Scrubber, answered_elsewhere: Callable[[Any], bool]
              ) -> Any:
    """A vcr.VCR that never records loopback traffic or what respx answers, and scrubs."""
    import vcr

    def before_record_request(request: Any) -> Any:
        if is_loopback(urlsplit(request.uri).hostname or "") or answered_elsewhere(request):
            return None  # neither recorded nor replayed: it goes where it goes
        return scrubber.request(request)

    recorder = vcr.VCR(
        serializer="yaml", record_mode=record_mode, decode_compressed_response=True,
        before_record_request=before_record_request, before_record_response=scrubber.response,
        match_on=("method", "scheme", "host", "port", "path", "query"),
    )
    recorder.register_persister(_parsed_once_persister())
    return recorder


def _parsed_once_persister() -> Any:
    """vcrpy's file persister, but a cassette file is parsed once per session and content,
    not once per test: YAML parsing was most of the per-test cost of replay."""
    from vcr.persisters.filesystem import FilesystemPersister

    parsed: dict[tuple[str, int, int], Any] = {}

    class ParsedOncePersister(FilesystemPersister):  # type: ignore[misc]
        @classmethod
        def load_cassette(cls, cassette_path: Any, serializer: Any) -> Any:
            try:
                stat = Path(cassette_path).stat()
            except OSError:
                return super().load_cassette(cassette_path, serializer)  # vcrpy's not-found
            key = (str(cassette_path), stat.st_mtime_ns, stat.st_size)
            if key not in parsed:
                parsed[key] = super().load_cassette(cassette_path, serializer)
            # vcrpy copies each request and response before using them (its filters do).
            return parsed[key]

    return ParsedOncePersister


@contextmanager
def clearer_missing_message() -> Iterator[None]:
    """While a cassette is active, vcrpy's 'cannot overwrite' error speaks depfakes."""
    from unittest import mock

    import vcr.errors

    if not hasattr(vcr.errors, "_message"):  # another vcrpy layout: keep its message
        yield
        return
    with mock.patch.object(vcr.errors, "_message", _missing_message):
        yield


def _missing_message(cassette: Any, request: Any, similar: Any, reason: str) -> str:
    mode = getattr(cassette.record_mode, "value", cassette.record_mode)
    lines = [f"depfakes http: {request.method} {request.uri} is not in cassette "
             f"{cassette._path} (record mode '{mode}')."]
    if similar:
        closest, _, failed = similar[0]
        differs = ", ".join(name for name, _ in failed) or "nothing"
        lines.append(f"Closest recorded request: {closest.method} {closest.uri} "
                     f"(differs in: {differs})")
    elif len(cassette):
        lines.append(f"The cassette has {len(cassette)} interaction(s), none similar.")
    else:
        lines.append("The cassette has no interactions.")
    fix = ("--record-mode=new_episodes to add it to this cassette" if len(cassette)
           else "--record-mode=once to record it")
    lines.append(f"Record it with pytest {fix} (never in CI), or stub it with deps.http.mock.")
    return "\n".join(lines)
