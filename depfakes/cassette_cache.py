"""Parsed cassettes kept between sessions, and a process that parses them ahead of the tests.

A cassette of megabytes costs its test milliseconds of YAML parsing. ParseCache keeps what
was parsed, in pytest's cache directory, so a later run reads it back instead. On a first
run (a fresh CI clone) the cache is empty: ``warming()`` then starts this file as a
process of its own that parses the session's cassettes into the cache, in the order the
tests will want them, on another core (parsing builds Python objects under the GIL, so a
thread could not take it off the tests' time). A test that gets to its cassette first
parses it itself, as it would without the warmer; a guessed file that no test reads costs
only the other core's time.

This module imports nothing from depfakes, nor vcrpy's package (whose import loads every
HTTP client's stubs: 0.3 s): the warmer runs it as a script and starts in ~0.1 s.

    python cassette_cache.py CACHE_DIR LIST_FILE     (LIST_FILE: NUL-separated paths)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import marshal
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

# Below this many bytes of cassettes the tests parse them faster than a process starts.
WARM_MIN_BYTES = 1_000_000
SUFFIXES = (".yaml", ".yml")


class ParseCache:
    """Parsed YAML cassettes kept between sessions (in pytest's cache directory), so a
    cassette of megabytes is parsed once per content, not once per run.

    One entry per cassette path, holding the file's digest and its data: a changed file
    misses, and entries do not pile up as cassettes are re-recorded. marshal (plain data
    only) rather than pickle: reading an entry never runs code. A cassette whose data
    marshal cannot hold (objects from custom YAML tags) is simply parsed each time.
    Entries are hashed and written on a thread of their own, off the tests' time (or,
    ``background=False``, before put() returns)."""

    def __init__(self, directory: Path, background: bool = True) -> None:
        self.directory = directory
        self._background = background  # False: put() writes before it returns
        self._writer: ThreadPoolExecutor | None = None

    def _entry(self, path: Path) -> Path:
        return self.directory / (hashlib.blake2b(str(path).encode(), digest_size=16)
                                 .hexdigest() + ".marshal")

    def get(self, path: Path, raw: bytes) -> Any:
        """The data kept for ``path`` if it was parsed from these bytes."""
        entry = self._read(path, raw)
        if entry is None:
            return None
        try:
            return marshal.loads(entry[_DIGEST_SIZE:])
        except (EOFError, ValueError, TypeError):  # unreadable: parsed again
            return None

    def put(self, path: Path, raw: bytes, data: Any) -> None:
        try:
            blob = marshal.dumps(data)  # now: the caller goes on to change ``data``
        except ValueError:  # not plain data
            return
        if not self._background:
            self._write(self._entry(path), raw, blob)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="depfakes-cassettes")
        self._writer.submit(self._write, self._entry(path), raw, blob)

    def holds(self, path: Path, raw: bytes) -> bool:
        """Whether an entry for ``path`` was made from these bytes (nothing is loaded)."""
        return self._read(path, raw) is not None

    def _read(self, path: Path, raw: bytes) -> bytes | None:
        try:
            entry = self._entry(path).read_bytes()  # the content's digest, then its data
        except OSError:  # none yet
            return None
        return entry if entry[:_DIGEST_SIZE] == _digest(raw) else None

    def _write(self, entry: Path, raw: bytes, blob: bytes) -> None:
        temporary = entry.with_name(f"{entry.name}.{os.getpid()}")
        try:
            with contextlib.suppress(OSError):  # a cache: a read-only checkout still replays
                self.directory.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(_digest(raw) + blob)
                os.replace(temporary, entry)  # whole, even with other processes writing
        except BaseException:  # stopped halfway (a warmer's SIGTERM): no half-written file left
            temporary.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Wait for the entries still being written."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None


_DIGEST_SIZE = 20


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=_DIGEST_SIZE).digest()


def structure_problem(data: Any) -> str | None:
    if isinstance(data, list):
        return "it is in vcrpy's old format (python -m vcr.migration converts it)"
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


@contextlib.contextmanager
def warming(cache_dir: Path, paths: Sequence[Path]) -> Iterator[None]:
    """Parse ``paths`` into the cache at ``cache_dir`` while the block runs; stopped when
    the block ends, whatever it had not reached left undone."""
    if sum(_size(p) for p in paths) < WARM_MIN_BYTES or _cores() < 2:
        yield
        return
    listing = cache_dir / f"warm-list.{os.getpid()}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        listing.write_bytes(b"\0".join(os.fsencode(p) for p in paths))
        process = subprocess.Popen([sys.executable, __file__, str(cache_dir), str(listing)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    except OSError:  # a read-only checkout: the tests parse their cassettes themselves
        listing.unlink(missing_ok=True)
        yield
        return
    try:
        yield
    finally:
        if process.poll() is None:
            process.terminate()  # it removes its half-written entry (ParseCache._write)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        listing.unlink(missing_ok=True)


def in_test_order(directories: Iterable[Path], names: Iterable[Iterable[str]]) -> list[Path]:
    """The cassettes in ``directories``: first those named like the tests (``names``, the
    possible file stems of each test's cassette, in run order), then the rest by name."""
    found: dict[str, list[Path]] = {}
    for directory in dict.fromkeys(directories):
        with contextlib.suppress(OSError):
            for path in sorted(directory.iterdir()):
                if path.suffix in SUFFIXES and path.is_file():
                    found.setdefault(path.stem, []).append(path)
    ordered: dict[Path, None] = {}
    for stems in names:
        for stem in stems:
            ordered.update(dict.fromkeys(found.get(stem, ())))
    for paths in found.values():
        ordered.update(dict.fromkeys(paths))
    return list(ordered)


def _cores() -> int:
    """The cores this process may run on (all of the machine's where that is unknown)."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _vcr_yaml_serializer() -> ModuleType:
    """vcrpy's YAML serializer module (the loader a test would parse with), loaded from its
    file alone, so that vcrpy's package is not imported."""
    package = importlib.util.find_spec("vcr")
    locations = package.submodule_search_locations if package else None
    if not locations:
        raise ImportError("vcrpy is not installed")
    path = Path(next(iter(locations))) / "serializers" / "yamlserializer.py"
    spec = importlib.util.spec_from_file_location("_depfakes_vcr_yaml", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warm(cache: ParseCache, paths: Iterable[Path]) -> None:
    """Parse each of ``paths`` into ``cache`` unless it is there already: what a test's
    read_cassette() would keep, valid cassettes only."""
    serializer = _vcr_yaml_serializer()
    for path in paths:
        try:
            raw = path.read_bytes()
            if cache.holds(path, raw):
                continue
            data = serializer.deserialize(raw.decode("utf-8"))
        except Exception:  # a broken cassette is its test's to report
            continue
        if structure_problem(data) is None:
            cache.put(path, raw, data)


def main(argv: Sequence[str]) -> None:
    cache_dir, listing = Path(argv[0]), Path(argv[1])
    # Run as a script, its own directory leads sys.path: depfakes' modules are not
    # top-level modules, and must not shadow any that yaml imports.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    with contextlib.suppress(OSError, AttributeError):  # no nice() on Windows
        os.nice(10)  # the tests come first
    # SIGTERM as SystemExit, so that an entry being written is removed (ParseCache._write).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    paths = [Path(os.fsdecode(p)) for p in listing.read_bytes().split(b"\0") if p]
    warm(ParseCache(cache_dir, background=False), paths)


if __name__ == "__main__":
    main(sys.argv[1:])
