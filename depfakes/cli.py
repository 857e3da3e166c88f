"""The ``depfakes`` command.

    depfakes cassettes check [PATH ...]   find secrets and broken files in cassettes
        [--unused]                        and what the last pytest run did not replay
    depfakes ps                           servers depfakes started on this host
    depfakes down [--project] [--all]     remove those whose pytest is gone (--project: also
                                          this project's kept ones; --all: every one)
    depfakes offline -- CMD ...           run CMD where only loopback exists
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from depfakes.backends import Listed
from depfakes.cassettes import (
    PLACEHOLDER,
    TOKEN_SHAPES,
    BrokenCassette,
    Scrubber,
    is_secret_name,
    read_cassette,
)

# Values that are secrets whatever field they sit in.
_SECRET_PATTERNS = {
    **TOKEN_SHAPES,
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "bearer token": re.compile(r"\bBearer\s+(?!" + PLACEHOLDER + r")[A-Za-z0-9._~+/=-]{8,}"),
}
# Request headers whose values are random but not secret (ids, hashes, dates).
_NOT_SECRET_HEADERS = frozenset({
    "user-agent", "accept", "accept-encoding", "accept-language", "content-type",
    "content-length", "content-md5", "etag", "if-none-match", "if-match", "host",
    "traceparent", "tracestate", "x-request-id", "x-correlation-id", "x-amz-date",
    "x-amz-content-sha256", "idempotency-key", "x-idempotency-key", "sentry-trace", "baggage",
})


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_cassettes(paths: Sequence[Path], allow: Sequence[str] = ()
                    ) -> tuple[int, list[Finding]]:
    """Return (cassettes checked, findings) for every .yaml/.yml file under ``paths``;
    names in ``allow`` (headers, parameters, fields) are never reported."""
    files = sorted({f for p in paths for f in _cassette_files(p)})
    allowed = frozenset(name.lower() for name in allow)
    findings: list[Finding] = []
    for path in files:
        findings.extend(_check_file(path, allowed))
    return len(files), findings


# Directories no project keeps its cassettes in.
_SKIPPED_DIRS = frozenset({".git", ".venv", "venv", "node_modules", "site-packages", ".tox",
                           ".nox", "__pycache__", "build", "dist"})


def default_cassette_dirs(root: Path) -> list[Path]:
    """Where a project's cassettes are: the configured depfakes_cassette_dir, and every
    directory named ``cassettes`` (depfakes', pytest-recording's and pytest-vcr's layouts)."""
    found = [root / name for name in _configured_cassette_dirs(root)]
    stack = [root]
    while stack:
        directory = stack.pop()
        for child in sorted(directory.iterdir()) if directory.is_dir() else []:
            if child.is_dir() and child.name not in _SKIPPED_DIRS and \
                    not child.name.startswith("."):
                (found.append if child.name == "cassettes" else stack.append)(child)
    return sorted({path for path in found if path.is_dir()})


def _configured_cassette_dirs(root: Path) -> list[str]:
    """depfakes_cassette_dir from the project's pytest configuration (as pytest reads it)."""
    configured = _ini_option(root, "depfakes_cassette_dir")
    return [configured] if configured else []


def _ini_option(root: Path, name: str) -> str | None:
    """An option of the project's pytest configuration, from the first file pytest would
    read it from (pyproject.toml, pytest.ini, tox.ini, setup.cfg)."""
    import configparser

    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):  # tomllib; 3.10: the ini files
        import tomllib

        with contextlib.suppress(ValueError):
            options = tomllib.loads(pyproject.read_text()).get("tool", {}).get(
                "pytest", {}).get("ini_options", {})
            if name in options:
                return str(options[name])
    for filename, section in (("pytest.ini", "pytest"), ("tox.ini", "pytest"),
                              ("setup.cfg", "tool:pytest")):
        parser = configparser.ConfigParser()
        with contextlib.suppress(configparser.Error, OSError):
            parser.read(root / filename)
            if parser.has_option(section, name):
                return parser.get(section, name).strip()
    return None


def unused_findings(files: Sequence[Path], root: Path) -> tuple[str, list[Finding]] | None:
    """Cassettes the last pytest run did not use, and interactions it did not replay
    (None: no run noted in the project's pytest cache); with a line saying which run."""
    from depfakes import cassette_use

    use = cassette_use.load(root / (_ini_option(root, "cache_dir") or ".pytest_cache"))
    if use is None:
        return None
    findings = []
    for path in files:
        if not use.used(path):
            findings.append(Finding(path, 1, "unused: no test read this cassette in the "
                                    "last run"))
            continue
        lines = _interaction_lines(path)
        for index in use.unplayed(path):
            findings.append(Finding(path, lines[index] if index < len(lines) else 1,
                                    f"unused: interaction {index + 1} was never replayed in "
                                    "the last run"))
    command = " ".join(["pytest", *use.info.get("args", [])])
    return f"the pytest run of {use.info.get('started', '?')} ({command})", findings


def _interaction_lines(path: Path) -> list[int]:
    """The line each interaction of a YAML cassette starts on."""
    import yaml

    with contextlib.suppress(yaml.YAMLError, OSError, UnicodeDecodeError):
        root = yaml.compose(path.read_text())
        for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
            if key.value == "interactions" and isinstance(value, yaml.SequenceNode):
                return [item.start_mark.line + 1 for item in value.value]
    return []


def _cassette_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        yield from (p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _check_file(path: Path, allowed: frozenset[str] = frozenset()) -> list[Finding]:
    try:
        read_cassette(path)
    except BrokenCassette as exc:
        return [Finding(path, _error_line(exc), f"broken cassette: {exc}")]
    import yaml

    text = path.read_text()
    data = _located(yaml.compose(text))
    findings = []
    for where, value in _secret_values(data, allowed):
        findings.append(Finding(path, _line_of(value), f"looks like a secret: {where}"))
    for label, pattern in _SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            findings.append(Finding(path, text.count("\n", 0, match.start()) + 1,
                                    f"looks like a secret: {label}"))
    return sorted(set(findings), key=lambda f: (f.line, f.message))


def _secret_values(data: dict[str, Any], allowed: frozenset[str] = frozenset()
                   ) -> Iterator[tuple[str, Any]]:
    def secret(name: str, value: Any, side: str) -> bool:
        if name.lower() in allowed or not _unscrubbed(value):
            return False
        if side.startswith("response"):  # "key", "code": data there (S3's <Key>, errors)
            return Scrubber().secret_in_response(name)
        return is_secret_name(name)

    for number, interaction in enumerate(data.get("interactions", []), start=1):
        request, response = interaction["request"], interaction["response"]
        for side, headers in (("request", request.get("headers")),
                              ("response", response.get("headers"))):
            for name, values in (headers or {}).items():
                for value in values if isinstance(values, list) else [values]:
                    if secret(name, value, side):
                        yield f"{side} header {name} (interaction {number})", value
                    elif side == "request" and name.lower() not in _NOT_SECRET_HEADERS and \
                            name.lower() not in allowed and _random_looking(str(value)):
                        yield (f"request header {name} (interaction {number}) holds a "
                               "random-looking value"), value
        uri = request["uri"]
        for name, value in parse_qsl(urlsplit(uri).query):
            if secret(name, value, "request"):
                yield f"query parameter {name} (interaction {number})", _within(uri, value)
        bodies = [("request body", request.get("body")),
                  ("response body", (response.get("body") or {}).get("string"))]
        for side, body in bodies:
            for name, value in _body_fields(body):
                if secret(name, value, side):
                    yield f"{side} field {name} (interaction {number})", _within(body, value)


def _body_fields(body: Any) -> Iterator[tuple[str, str]]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip():
        return
    try:
        yield from _json_fields(json.loads(body))
        return
    except ValueError:
        pass
    if "=" in body and "\n" not in body.strip():
        yield from parse_qsl(body)


def _json_fields(value: Any, secret_parent: str | None = None) -> Iterator[tuple[str, str]]:
    """(name, value) of every leaf; a leaf under a secret-named key carries that name."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = secret_parent or (str(key) if is_secret_name(str(key)) else None)
            if isinstance(item, (dict, list)):
                yield from _json_fields(item, name)
            elif item is not None:
                yield name or str(key), str(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_fields(item, secret_parent)


def _random_looking(value: str) -> bool:
    """A long token-like string with the entropy of a generated credential."""
    import math
    from collections import Counter

    for word in re.findall(r"[A-Za-z0-9+/_=.-]{24,}", value):
        counts = Counter(word)
        entropy = -sum(n / len(word) * math.log2(n / len(word)) for n in counts.values())
        has_mix = any(c.isdigit() for c in word) and any(c.isalpha() for c in word)
        if entropy >= 4.2 and has_mix and PLACEHOLDER not in word:
            return True
    return False


# What other tools and people write instead of a secret ("<REDACTED>", "XXXX", "dummy").
_PLACEHOLDERS = re.compile(r"(?i)redacted|filtered|scrubbed|dummy|placeholder|masked|"
                           r"removed|^<[^>]*>$|^\{\{.*\}\}$|^(.)\1*$")


def _unscrubbed(value: Any) -> bool:
    """A value that could be a secret: not empty, a placeholder, a flag or a number."""
    text = str(value).strip()
    return bool(text) and PLACEHOLDER not in text and not _PLACEHOLDERS.search(text) and \
        text.lower() not in ("true", "false", "null", "none") and \
        not re.fullmatch(r"[\d.:-]+", text)


class _Located(str):
    """A YAML scalar that knows the line it starts on."""

    line: int = 1


def _located(node: Any) -> Any:
    """A composed YAML document as plain values, its strings carrying their line."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        return {str(_located(key)): _located(value) for key, value in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_located(item) for item in node.value]
    if node is None or node.tag.endswith(":null"):
        return None
    scalar = _Located(node.value)
    scalar.line = node.start_mark.line + 1
    return scalar


def _within(text: Any, value: str) -> Any:
    """``value`` found in a located scalar ``text``: located at the line it is on."""
    located = _Located(value)
    start = getattr(text, "line", 1)
    index = str(text).find(value) if text is not None else -1
    located.line = start + (str(text).count("\n", 0, index) if index >= 0 else 0)
    return located


def _line_of(value: Any) -> int:
    return int(getattr(value, "line", 1))


def _error_line(exc: Exception) -> int:
    """The line YAML names last: where it found the problem (the first is where it began)."""
    lines = re.findall(r"line (\d+)", str(exc))
    return int(lines[-1]) if lines else 1


def _servers() -> tuple[list[Listed], list[str]]:
    """Servers every backend started on this host, and what could not be looked at."""
    from depfakes.backends import registered

    servers: list[Listed] = []
    problems = []
    for backend in registered().values():
        found, problem = backend.listing()
        # A backend built on another (a DockerBackend subclass) lists the same servers.
        known = {(s.backend, s.id) for s in servers}
        servers += [s for s in found if (s.backend, s.id) not in known]
        if problem:
            problems.append(f"{backend.name}: not listed ({problem})")
    return servers, problems


def _doctor(pytest_args: Sequence[str]) -> int:
    """A pytest collection in a process of its own: this one has imported depfakes already,
    which pytest would warn about (an error under the project's -W error)."""
    import subprocess

    code = subprocess.call([sys.executable, "-m", "pytest", "--collect-only", "-qq",
                            "--deps-doctor", "-p", "no:cacheprovider", *pytest_args])
    return 0 if code == 5 else code  # 5: no tests collected


def _ps() -> int:
    servers, problems = _servers()
    for server in servers:
        print(f"{server.backend:<7}{server.id:<14}{server.state:<15}{server.what}"
              + (f"  [{server.project}]" if server.project else ""))
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"depfakes: {len(servers)} server(s)")
    return 0


def _down(include_live: bool, project: Path | None) -> int:
    """Remove servers of sessions that are gone; with --project those this project kept
    too; with --all every server of this host."""
    from depfakes.backends import sweep_session_dirs

    servers, problems = _servers()
    removed, kept = [], 0
    root = str(project.resolve()) if project else None
    for server in servers:
        mine = root is not None and server.project == root and \
            server.state not in ("session alive", "other host")
        if include_live or server.removable_by_default or mine:
            server.remove()
            removed.append(f"{server.backend} {server.id} ({server.what})")
        else:
            kept += 1
    sweep_session_dirs()
    for what in removed:
        print(f"removed {what}")
    for problem in problems:
        print(problem.replace("not listed", "skipped"), file=sys.stderr)
    print(f"depfakes: {len(removed)} removed, {kept} kept"
          + ("" if include_live or not kept else
             " (--project removes this project's kept servers, --all every one)"))
    return 0


def _offline(argv: list[str]) -> int:
    import subprocess

    from depfakes.errors import DepfakesError
    from depfakes.network import offline_command

    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print("depfakes offline: name a command, e.g. depfakes offline -- pytest",
              file=sys.stderr)
        return 2
    try:
        return subprocess.call(offline_command(command))
    except DepfakesError as exc:
        print(exc, file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="depfakes", description="depfakes tools")
    commands = parser.add_subparsers(dest="command", required=True)
    doctor = commands.add_parser("doctor", help="which backend serves each dependency here")
    doctor.add_argument("pytest_args", nargs="*", help="passed to pytest (paths, -c, ...)")
    commands.add_parser("ps", help="list servers depfakes started on this host")
    down = commands.add_parser("down", help="remove servers whose pytest session is gone")
    down.add_argument("--all", action="store_true",
                      help="also remove servers of sessions that are still running, and kept "
                           "ones, of every project on this host")
    down.add_argument("--project", nargs="?", const=Path("."), type=Path, default=None,
                      metavar="DIR", help="also remove the servers this project (default: the "
                      "current directory) kept with --deps-reuse")
    offline = commands.add_parser(
        "offline", help="run a command (e.g. pytest) where only loopback exists: covers "
        "subprocesses and C extensions, which the in-process policy cannot see")
    offline.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND",
                         help="the command, after --, e.g. depfakes offline -- pytest")
    cassettes = commands.add_parser("cassettes", help="work with HTTP cassettes")
    actions = cassettes.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="find secrets and broken files in cassettes")
    check.add_argument("paths", nargs="*", type=Path,
                       help="files or directories (default: the configured "
                            "depfakes_cassette_dir and every 'cassettes' directory here)")
    check.add_argument("--allow", action="append", default=[], metavar="NAME",
                       help="a header, parameter or field name that holds no secret here "
                            "(a pagination 'token', say); repeatable")
    check.add_argument("--unused", action="store_true",
                       help="also report cassettes the last pytest run did not use and "
                            "recorded interactions it did not replay (run the whole suite "
                            "first)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor(args.pytest_args)
    if args.command == "ps":
        return _ps()
    if args.command == "down":
        return _down(args.all, args.project)
    if args.command == "offline":
        return _offline(args.argv)

    return _check(args.paths or default_cassette_dirs(Path()), args.allow, args.unused)


def _check(paths: Sequence[Path], allow: Sequence[str], unused: bool) -> int:
    checked, findings = check_cassettes(paths, allow)
    if not checked:
        where = ", ".join(str(p) for p in paths) or "no 'cassettes' directory here"
        print(f"depfakes: no cassettes found ({where}): name the files or directories your "
              "cassettes are in, e.g. depfakes cassettes check tests/cassettes",
              file=sys.stderr)
        return 1
    if unused:
        report = unused_findings(sorted({f for p in paths for f in _cassette_files(p)}),
                                 Path())
        if report is None:
            print("depfakes: no pytest run is noted in this project's pytest cache: run the "
                  "suite (pytest, from here), then depfakes cassettes check --unused",
                  file=sys.stderr)
            return 1
        run, more = report
        findings += more
        print(f"depfakes: unused means: by {run}", file=sys.stderr)
    for finding in findings:
        print(finding)
    noun = "cassette" if checked == 1 else "cassettes"
    print(f"depfakes: {checked} {noun} checked, {len(findings)} finding(s)",
          file=sys.stderr if findings else sys.stdout)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
