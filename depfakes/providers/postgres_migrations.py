"""The template's schema from files: SQL scripts and alembic migrations
(``depfakes_postgres_migrations``), applied before the init hooks, in the pytest process.

Each line of the setting is one of:

* a ``.sql`` file, run as one script;
* a directory: its ``.sql`` files, in name order (``001_users.sql``, ``002_orders.sql``);
* an ``alembic.ini``: ``alembic upgrade head`` with ``sqlalchemy.url`` set to the
  template (the way alembic's own ``env.py`` template reads it).

Relative paths are from pytest's rootdir. What the files contain is part of the template's
fingerprint, so a template kept by ``--deps-reuse`` is rebuilt when a migration changes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from depfakes.errors import DepfakesError
from depfakes.providers import postgres_driver


class MigrationsNotFound(DepfakesError):
    """A depfakes_postgres_migrations line names nothing that exists."""


def sources(root: Path, lines: Sequence[str]) -> list[Path]:
    """The files each line stands for, in the order they are applied."""
    found: list[Path] = []
    for line in lines:
        path = root / line.strip()
        if path.is_dir():
            found += sorted(path.glob("*.sql"))
        elif path.is_file():
            found.append(path)
        else:
            raise MigrationsNotFound(
                f"depfakes_postgres_migrations: {line.strip()!r} does not exist (relative "
                f"paths are from {root}); name a .sql file, a directory of them, or an "
                "alembic.ini")
    return found


def fingerprint_parts(root: Path, lines: Sequence[str]) -> list[str]:
    """What the migrations consist of: every SQL file, and for alembic its ini and every
    file of its script location."""
    parts = []
    for path in sources(root, lines):
        files = [path, *_alembic_scripts(path)] if path.suffix == ".ini" else [path]
        parts += [file_part(root, file) for file in files]
    return parts


def file_part(root: Path, file: Path) -> str:
    """A file in a template's fingerprint: its name (from ``root``) and contents."""
    return (f"{file.relative_to(root) if file.is_relative_to(root) else file}:"
            f"{file.read_bytes().hex()}")


def apply(root: Path, lines: Sequence[str], dsn: str, url: str) -> None:
    """Run the migrations on the template: ``dsn`` is its libpq URL, ``url`` SQLAlchemy's."""
    for path in sources(root, lines):
        if path.suffix == ".ini":
            _alembic_upgrade(path, url)
        else:
            with postgres_driver.connect(dsn) as connection:
                connection.execute(path.read_text().encode())  # a script: no parameters


def _alembic_config(ini: Path) -> Any:
    from alembic.config import Config

    config = Config(str(ini))
    location = config.get_main_option("script_location") or ""
    # alembic reads a relative script_location from the current directory; ours is the ini's.
    if location and not Path(location).is_absolute() and "%(here)s" not in location:
        config.set_main_option("script_location", str(ini.parent / location))
    return config


def _alembic_scripts(ini: Path) -> list[Path]:
    config = _alembic_config(ini)
    location = Path(config.get_main_option("script_location"))
    return sorted(p for p in location.rglob("*") if p.is_file() and p.suffix in (".py", ".sql",
                                                                               ".mako"))


def _alembic_upgrade(ini: Path, url: str) -> None:
    from alembic import command

    config = _alembic_config(ini)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))  # configparser syntax
    with _loggers_kept():
        command.upgrade(config, "head")


@contextlib.contextmanager
def _loggers_kept() -> Iterator[None]:
    """env.py's ``fileConfig`` disables every logger that exists (caplog would then see
    nothing of the app's); put them back as they were."""
    before = {name: logger.disabled for name, logger in logging.root.manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    try:
        yield
    finally:
        for name, disabled in before.items():
            logger = logging.root.manager.loggerDict.get(name)
            if isinstance(logger, logging.Logger):
                logger.disabled = disabled
