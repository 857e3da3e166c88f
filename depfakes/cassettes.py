"""vcrpy wiring: where cassettes live, record modes, what is never recorded, scrubbing,
and the messages for a request that is not in the cassette or a cassette that is broken.

Scrubbing runs only on what a test records, when it is written: replay gives the code the
cassette's bytes, and an interaction already in a cassette is never rewritten. A scrubbed
value in a recorded request matches any value when a live request is compared with it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from depfakes.cassette_cache import ParseCache, structure_problem
from depfakes.errors import DepfakesError
from depfakes.network import is_loopback

RECORD_MODES = ("none", "once", "new_episodes", "all", "rewrite")
PLACEHOLDER = "DEPFAKES-SCRUBBED"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                            "x-api-key", "x-auth-token", "x-amz-security-token"})
_SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "pwd", "signature", "sig",
                 "credential", "credentials", "auth", "apikey", "session", "jwt", "otp",
                 "passphrase", "assertion", "sessionid", "privatekey")
_SECRET_SUFFIXES = ("token", "key", "secret", "password", "signature", "sessionid")
# Names that only look secret: what kind of token, where to get one, CORS.
_NOT_SECRET_NAMES = frozenset({"token_type", "token_endpoint", "authorization_endpoint",
                               "token_endpoint_auth_method", "access-control-allow-credentials",
                               "access-control-allow-headers", "auth_type", "key_type"})
# Secret as a whole name, too generic as a word ("country_code" is not).
_SECRET_NAMES = frozenset({"code", "code_verifier", "connection_string", "connectionstring",
                           "x-jwt-assertion", "client_assertion", "pin", "cvv", "cvc"})
# Values that are secrets whatever field they sit in (scrubbed anywhere, and what
# `depfakes cassettes check` looks for).
TOKEN_SHAPES = {
    "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Stripe key": re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[^-]*-----END [A-Z ]*PRIVATE "
                              r"KEY-----"),
}
# Response headers that carry a URL, whose query or fragment may hold a token (OAuth's
# implicit flow redirects to ...#access_token=...).
_URL_HEADERS = frozenset({"location", "content-location", "refresh", "link"})


class StaleCassetteWarning(UserWarning):
    """A test replayed a cassette older than depfakes_cassette_max_age."""


class BrokenCassette(DepfakesError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"depfakes http: cassette {path} is broken: {problem}. Fix or delete "
                         "it (depfakes never overwrites a broken cassette).")


def is_secret_name(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a header, parameter or JSON field name looks like it holds a secret."""
    lowered = name.lower()
    if lowered in _NOT_SECRET_NAMES:
        return False
    if lowered in SECRET_HEADERS or lowered in _SECRET_NAMES or \
            lowered in {e.lower() for e in extra}:
        return True
    parts = [p for p in re.split(r"[^a-z0-9]+", lowered) if p]
    return any(p in _SECRET_WORDS for p in parts) or lowered.endswith(_SECRET_SUFFIXES)


@dataclass(frozen=True)
class CassetteChoice:
    """A test's cassette as another plugin's conventions place it (pytest-recording's or
    pytest-vcr's layout, their ``vcr`` marker: vcr_compat.py); without one, cassette_path()."""

    path: Path | None  # None: depfakes' own place
    extra: tuple[Path, ...] = ()  # read too, never written (the vcr marker's arguments)
    vcr_options: Mapping[str, Any] = field(default_factory=dict)  # for use_cassette()


CHOICE_KEY = pytest.StashKey[CassetteChoice]()


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
    """What recording writes: secrets replaced by PLACEHOLDER, wherever they sit."""

    extra_names: tuple[str, ...] = ()
    # Project rules (the pytest_depfakes_scrub_* hooks), run after the built-in ones.
    more_request: Callable[[Any], Any] | None = None
    more_response: Callable[[Any], Any] | None = None
    # Names that are not secret here (a "token" pagination cursor), and whether the
    # built-in names count at all (values shaped like known tokens always do).
    kept_names: frozenset[str] = frozenset()
    builtin_names: bool = True

    @classmethod
    def from_setting(cls, lines: Iterable[str], **hooks: Any) -> Scrubber:
        """depfakes_scrub: ``name`` scrubs it too, ``-name`` keeps it, ``off`` turns the
        built-in names off."""
        names = [line.strip() for line in lines if line.strip()]
        return cls(tuple(n for n in names if not n.startswith("-") and n.lower() != "off"),
                   kept_names=frozenset(n[1:].strip().lower() for n in names
                                        if n.startswith("-")),
                   builtin_names="off" not in {n.lower() for n in names}, **hooks)

    def secret(self, name: str) -> bool:
        lowered = name.lower()
        if lowered in self.kept_names:
            return False
        if not self.builtin_names:
            return lowered in {e.lower() for e in self.extra_names}
        return is_secret_name(name, self.extra_names)

    def secret_in_response(self, name: str) -> bool:
        """Responses use "key" and "code" for data (S3's <Key>, error codes): only names
        that are secrets wherever they appear count there."""
        lowered = name.lower()
        return self.secret(name) and lowered not in _SECRET_NAMES and lowered != "key"

    def request(self, request: Any) -> Any:
        for header in list(request.headers):
            if self.secret(header):
                request.headers[header] = PLACEHOLDER
        request.uri = self._scrub_url(request.uri)
        body = _decoded(request.body, request.headers)
        if body is not request.body:  # stored decoded, so scrubbing (and people) can read it
            for header in [h for h in request.headers if h.lower() == "content-encoding"]:
                del request.headers[header]
        request.body = self._scrub_body(body, _header(request.headers, "content-type"),
                                        self.secret)
        if self.more_request is not None:
            self.more_request(request)
        return request

    def response(self, response: dict[str, Any]) -> dict[str, Any]:
        response = copy.deepcopy(response)  # the client may still read the original
        headers = response.get("headers", {})
        for header in list(headers):
            if self.secret(header):
                headers[header] = [PLACEHOLDER]
            elif header.lower() in _URL_HEADERS:
                headers[header] = [self._scrub_url(str(v)) for v in _as_list(headers[header])]
        content_type = " ".join(_first(headers, "content-type"))
        body = response.get("body", {})
        if isinstance(body, dict) and "string" in body:
            body["string"] = self._scrub_body(body["string"], content_type,
                                              self.secret_in_response)
        if self.more_response is not None:
            self.more_response(response)
        return response

    def _scrub_url(self, url: str) -> str:
        parts = urlsplit(url)
        scrubbed = parts._replace(path=_scrub_shapes(parts.path),
                                  query=self._scrub_pairs(parts.query),
                                  fragment=self._scrub_pairs(parts.fragment))
        return url if scrubbed == parts else urlunsplit(scrubbed)

    def _scrub_pairs(self, text: str, secret: Callable[[str], bool] | None = None) -> str:
        """A query or fragment: secret-named parameters replaced, the rest as it was."""
        secret = secret or self.secret
        if "=" not in text:
            return _scrub_shapes(text)
        pairs = parse_qsl(text, keep_blank_values=True)
        if not any(secret(k) or _scrub_shapes(v) != v for k, v in pairs):
            return text
        return urlencode([(k, PLACEHOLDER if secret(k) else _scrub_shapes(v))
                          for k, v in pairs], safe=PLACEHOLDER + "/:")

    def _scrub_body(self, body: Any, content_type: str, secret: Callable[[str], bool]) -> Any:
        if not body:
            return body
        if isinstance(body, (dict, list)):  # aiohttp's json=: a mapping, not text
            return self._scrub_json(body, secret)
        # surrogateescape: bytes that are not UTF-8 (a file in a multipart body) survive.
        text = (body.decode("utf-8", "surrogateescape") if isinstance(body, bytes)
                else str(body))
        scrubbed = self._scrub_text(text, content_type, secret)
        if scrubbed == text:
            return body
        return scrubbed.encode("utf-8", "surrogateescape") if isinstance(body, bytes) \
            else scrubbed

    def _scrub_text(self, text: str, content_type: str, secret: Callable[[str], bool]) -> str:
        kind = content_type.lower()
        stripped = text.lstrip()
        if "json" in kind or stripped[:1] in ("{", "["):
            try:
                parsed = json.loads(text)
            except ValueError:
                pass
            else:
                scrubbed = self._scrub_json(parsed, secret)
                # Unchanged: the bytes as they were (json.dumps would rewrite 1.10, é...).
                return text if scrubbed == parsed else json.dumps(scrubbed)
        if "multipart/form-data" in kind:
            return _scrub_shapes(self._scrub_multipart(text, content_type, secret))
        if "xml" in kind:
            return _scrub_shapes(_XML_ELEMENT.sub(
                lambda match: self._scrub_element(match, secret), text))
        if "x-www-form-urlencoded" in kind or _FORM.fullmatch(stripped):
            return self._scrub_pairs(text, secret)
        return _scrub_shapes(text)

    def _scrub_element(self, match: re.Match[str], secret: Callable[[str], bool]) -> str:
        local = match["tag"].rpartition(":")[2]
        if secret(local):
            return f"<{match['tag']}{match['attrs'] or ''}>{PLACEHOLDER}</{match['tag']}>"
        return match[0]

    def _scrub_multipart(self, text: str, content_type: str,
                         secret: Callable[[str], bool]) -> str:
        boundary = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
        if not boundary:
            return text
        parts = text.split(f"--{boundary[1]}")
        for index, part in enumerate(parts):
            head, sep, _ = part.partition("\r\n\r\n")
            name = re.search(r'\bname="([^"]*)"', head)
            if sep and name and secret(name[1]):
                parts[index] = f"{head}{sep}{PLACEHOLDER}\r\n"
        return f"--{boundary[1]}".join(parts)

    def _scrub_json(self, value: Any, secret: Callable[[str], bool],
                    inside_secret: bool = False) -> Any:
        if isinstance(value, dict):
            return {k: self._scrub_json(v, secret, inside_secret or secret(str(k)))
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub_json(item, secret, inside_secret) for item in value]
        if inside_secret and value is not None:  # a secret-named key holds it, however deep
            return PLACEHOLDER
        return _scrub_shapes(value) if isinstance(value, str) else value


_XML_ELEMENT = re.compile(r"<(?P<tag>[\w:.-]+)(?P<attrs>\s[^<>]*)?>(?P<value>[^<]*)"
                          r"</(?P=tag)>")
_FORM = re.compile(r"[\w.%+-]+=[^\s&]*(?:&[\w.%+-]+=[^\s&]*)*")


def _scrub_shapes(text: str) -> str:
    for pattern in TOKEN_SHAPES.values():
        text = pattern.sub(PLACEHOLDER, text)
    return text


def _decoded(body: Any, headers: Any) -> Any:
    """A gzip/deflate request body, decompressed (else ``body`` itself)."""
    encoding = _header(headers, "content-encoding").lower()
    if not isinstance(body, bytes) or encoding not in ("gzip", "deflate"):
        return body
    import zlib

    try:
        return zlib.decompress(body, 47 if encoding == "gzip" else 15)
    except zlib.error:
        try:
            return zlib.decompress(body, -15)  # raw deflate
        except zlib.error:
            return body


def _header(headers: Any, name: str) -> str:
    for key in headers:
        if key.lower() == name:
            value = headers[key]
            return str(value[0] if isinstance(value, list) and value else value)
    return ""


def _as_list(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]


def _first(headers: dict[str, Any], name: str) -> list[str]:
    for key, values in headers.items():
        if key.lower() == name:
            return values if isinstance(values, list) else [values]
    return []


@dataclass(frozen=True)
class Recorded:
    """A cassette file's contents as vcrpy reads them."""

    requests: list[Any]
    responses: list[Any]
    metadata: dict[str, Any]

    def as_loaded(self) -> tuple[Any, ...]:
        """What a vcrpy persister's load_cassette returns."""
        return (self.requests, self.responses, *([self.metadata] if self.metadata else []))

    def oldest_date(self) -> datetime | None:
        """When the oldest interaction was recorded, by its response's Date header."""
        dates = []
        for response in self.responses:
            for value in _first(response.get("headers") or {}, "date")[:1]:
                with contextlib.suppress(TypeError, ValueError, IndexError):
                    dates.append(parsedate_to_datetime(str(value)))
        aware = [d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in dates]
        return min(aware, default=None)


def read_cassette(path: Path, serializer: Any = None, cache: ParseCache | None = None
                  ) -> Recorded:
    """A cassette, read with the serializer vcrpy would use, or BrokenCassette.

    vcrpy treats an unreadable cassette as empty and may record over it; this stops that.
    FileNotFoundError passes through: a missing cassette is not broken."""
    import yaml
    from vcr.request import Request
    from vcr.serializers import compat, yamlserializer

    serializer = serializer or yamlserializer
    raw = path.read_bytes()
    cache = cache if serializer is yamlserializer else None  # its data is plain
    data = cache.get(path, raw) if cache is not None else None
    if data is None:
        try:
            data = serializer.deserialize(raw.decode("utf-8"))
        except ImportError:  # what vcrpy's serializers raise for its pre-1.0 format
            raise BrokenCassette(path, "it is in vcrpy's old format (python -m vcr.migration "
                                 "converts it)") from None
        except (yaml.YAMLError, ValueError) as exc:  # JSON's, UTF-8's: ValueErrors
            raise BrokenCassette(path, " ".join(str(exc).split())) from None
        problem = structure_problem(data)
        if problem:
            raise BrokenCassette(path, problem)
        if cache is not None:
            cache.put(path, raw, data)
    try:  # as vcrpy's deserialize() builds them
        requests = [Request._from_dict(i["request"]) for i in data["interactions"]]
    except TypeError as exc:
        raise BrokenCassette(path, f"a request is malformed ({exc})") from None
    responses = [compat.convert_to_bytes(i["response"]) for i in data["interactions"]]
    return Recorded(requests, responses, dict(data.get("metadata") or {}))


def build_vcr(record_mode: str, scrubber: Scrubber, answered_elsewhere: Callable[[Any], bool],
              cache: ParseCache | None = None) -> Any:
    """A vcr.VCR that never records loopback traffic or what respx answers, and scrubs
    what it writes. Replay gives the code exactly what the cassette holds: nothing is
    decoded or scrubbed on the way in, and live requests are matched as they are (a
    scrubbed value in a recorded request matches any value: the secret it replaced)."""
    import vcr

    def before_record_request(request: Any) -> Any:
        if is_loopback(urlsplit(request.uri).hostname or "") or answered_elsewhere(request):
            return None  # neither recorded nor replayed: it goes where it goes
        return request

    # rewrite (pytest-recording's): record the test's interactions afresh. vcrpy has no
    # such mode: what is on disk is not loaded, and is replaced only if the test records.
    recorder = vcr.VCR(
        serializer="yaml",
        record_mode="new_episodes" if record_mode == "rewrite" else record_mode,
        before_record_request=before_record_request,
        match_on=("method", "scheme", "host", "port", "path", "query"),
    )
    for name, matcher in (("path", _path_matches), ("query", _query_matches)):
        matcher.__name__ = name  # vcrpy names a failed matcher by its function's name
        recorder.register_matcher(name, matcher)
    files = CassetteFiles(scrubber, ignore_existing=record_mode == "rewrite", cache=cache)
    recorder.depfakes_files = files
    recorder.register_persister(files.persister())
    return recorder


def cassette_options(recorder: Any, path: Path, choice: CassetteChoice | None) -> dict[str, Any]:
    """use_cassette() keywords for a test: a plugin's vcrpy options (vcr_config, the vcr
    marker's), with depfakes' own filter (loopback and routes never recorded) run after
    the project's before_record_request instead of being replaced by it."""
    files: CassetteFiles = recorder.depfakes_files
    files.extras[str(path)] = [str(p) for p in choice.extra] if choice is not None else []
    if choice is None:
        return {}
    options = {k: v for k, v in choice.vcr_options.items() if k != "record_mode"}  # session's
    if "before_record" in options:  # vcrpy's older name
        options["before_record_request"] = options.pop("before_record")
    if "before_record_request" in options:
        options["before_record_request"] = _chained(options["before_record_request"],
                                                    recorder.before_record_request)
    return options


def _chained(first: Callable[[Any], Any] | list[Callable[[Any], Any]],
             then: Callable[[Any], Any]) -> Callable[[Any], Any]:
    hooks = [*(first if isinstance(first, list | tuple) else [first]), then]

    def run(value: Any) -> Any:
        for hook in hooks:
            if value is None:  # a hook dropped it: not recorded
                return None
            value = hook(value)
        return value

    return run


def _matches(recorded: str, live: str) -> bool:
    """Equal, or equal but where the recorded text has a scrubbed value (any value there)."""
    if recorded == live:
        return True
    if PLACEHOLDER not in recorded:
        return False
    pattern = ".+".join(re.escape(part) for part in recorded.split(PLACEHOLDER))
    return re.fullmatch(pattern, live, re.S) is not None


def _path_matches(live: Any, recorded: Any) -> None:
    if not (_matches(recorded.path, live.path) or _matches(live.path, recorded.path)):
        raise AssertionError(f"{live.path} != {recorded.path}")


def _query_matches(live: Any, recorded: Any) -> None:
    ours, theirs = live.query, recorded.query
    if len(ours) != len(theirs) or not all(
            a[0] == b[0] and (_matches(b[1], a[1]) or _matches(a[1], b[1]))
            for a, b in zip(ours, theirs, strict=True)):
        raise AssertionError(f"{ours} != {theirs}")


class CassetteFiles:
    """How depfakes reads and writes cassette files (vcrpy's persister).

    Read: a file is parsed once per session and content, not once per test (YAML parsing
    was most of the cost of replay), together with the extra cassettes a test names.
    Each request read remembers where it came from (``depfakes_origin``: file, index),
    which vcrpy's copies keep: that is how saving tells recorded from new, and how a
    session knows what it replayed.
    Written: the file's own interactions exactly as they are on disk, then what the test
    recorded, decoded (gzip...) and scrubbed. Nothing already in a cassette is rewritten,
    and the extras are never copied in."""

    def __init__(self, scrubber: Scrubber, ignore_existing: bool = False,
                 cache: ParseCache | None = None) -> None:
        self.scrubber = scrubber
        self.ignore_existing = ignore_existing
        self.cache = cache
        self.extras: dict[str, list[str]] = {}  # cassette path -> more cassettes read with it
        self.interactions: dict[str, int] = {}  # every cassette read -> interactions in it
        self.played: dict[str, set[int]] = {}  # cassette path -> indexes a test replayed
        self._parsed: dict[tuple[str, int, int], Recorded] = {}

    def persister(self) -> Any:
        from vcr.persisters.filesystem import CassetteNotFoundError, FilesystemPersister

        files = self

        class Persister(FilesystemPersister):  # type: ignore[misc]
            @classmethod
            def load_cassette(cls, cassette_path: Any, serializer: Any) -> Any:
                path = str(cassette_path)
                own = files.read(path, serializer)  # checked even when rewrite ignores it
                parts = [] if own is None or files.ignore_existing else [own]
                parts += [r for r in (files.read(p, serializer)
                                      for p in files.extras.get(path, [])) if r is not None]
                if not any(part.requests for part in parts):
                    raise CassetteNotFoundError  # what vcrpy says of a missing file
                return Recorded([q for part in parts for q in part.requests],
                                [r for part in parts for r in part.responses],
                                parts[0].metadata if parts[0] is own else {}).as_loaded()

            @staticmethod
            def save_cassette(cassette_path: Any, cassette_dict: Any, serializer: Any) -> None:
                FilesystemPersister.save_cassette(
                    cassette_path, files.to_save(str(cassette_path), cassette_dict, serializer),
                    serializer)

        return Persister

    def read(self, path: str, serializer: Any = None) -> Recorded | None:
        """A cassette file (None if there is none), parsed once per session and content."""
        try:
            stat = Path(path).stat()
        except FileNotFoundError:
            return None
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._parsed:
            recorded = read_cassette(Path(path), serializer, self.cache)
            for index, request in enumerate(recorded.requests):
                request.depfakes_origin = (path, index)
            self._parsed[key] = recorded
            self.interactions[path] = len(recorded.requests)
        # vcrpy copies each request and response before using them (its filters do).
        return self._parsed[key]

    def note_played(self, cassette: Any) -> None:
        """Remember which recorded interactions a test's cassette replayed."""
        for index, count in cassette.play_counts.items():
            origin = getattr(cassette.data[index][0], "depfakes_origin", None)
            if count and origin is not None:
                self.played.setdefault(origin[0], set()).add(origin[1])

    def to_save(self, path: str, cassette: dict[str, Any], serializer: Any) -> dict[str, Any]:
        """What vcrpy would save: its interactions from this file as they are on disk, the
        ones the test recorded decoded and scrubbed, the extras' left out."""
        from vcr.filters import decode_response

        own = None if self.ignore_existing else self.read(path, serializer)
        requests: list[Any] = []
        responses: list[Any] = []
        for request, response in zip(cassette["requests"], cassette["responses"], strict=True):
            origin = getattr(request, "depfakes_origin", None)
            if origin is None:
                requests.append(self.scrubber.request(copy.deepcopy(request)))
                responses.append(self.scrubber.response(decode_response(copy.deepcopy(
                    response))))
            elif own is not None and origin[0] == path:
                requests.append(own.requests[origin[1]])
                responses.append(own.responses[origin[1]])
        saved = {"requests": requests, "responses": responses}
        return {**saved, "metadata": cassette["metadata"]} if cassette.get("metadata") \
            else saved


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
    """vcrpy's CannotOverwriteExistingCassetteException, said for depfakes: which request is
    new, what the closest recorded one differs in, and the command that records it."""
    mode = getattr(cassette.record_mode, "value", cassette.record_mode)
    lines = [f"depfakes http: {request.method} {request.uri} is not in cassette "
             f"{cassette._path} (record mode '{mode}')."]
    if reason == "already_played":
        lines.append(f"It was recorded {_times(cassette, request)}, and each recorded "
                     "response plays once: the test now makes it more often. Record the "
                     "extra call, or replay repeats with deps(\"http\", playback_repeats=True).")
    elif similar:
        closest, _, failed = similar[0]
        lines.append(f"Closest recorded request: {closest.method} {closest.uri} (differs in: "
                     f"{', '.join(name for name, _ in failed) or 'nothing'})")
        lines += [f"  {name}: {' '.join(str(why).split())[:300]}" for name, why in failed]
    elif len(cassette):
        lines.append(f"The cassette has {len(cassette)} interaction(s), none similar.")
    else:
        lines.append("The cassette has no interactions.")
    mode_to_add = "new_episodes" if len(cassette) else "once"
    nodeid = getattr(cassette, "depfakes_nodeid", None)
    command = f"pytest '{nodeid}' " if nodeid else "pytest "
    lines.append(f"Record it against the real API with {command}--record-mode={mode_to_add} "
                 "(never in CI), or stub it with deps.http.mock.")
    return "\n".join(lines)


def _times(cassette: Any, request: Any) -> str:
    count = sum(1 for _ in cassette._responses(request)) if hasattr(cassette, "_responses") \
        else 0
    return {0: "before", 1: "once"}.get(count, f"{count} times")
