"""The errors depfakes shows users. Each message names the problem and the fix."""

from __future__ import annotations


class DepfakesError(Exception):
    """Base class for errors that carry a message meant for the user."""


class MarkerError(DepfakesError):
    """A ``deps`` marker names an unknown dependency or option, or conflicts with itself."""


class UndeclaredDependency(DepfakesError, AttributeError):
    """A test read ``deps.<name>`` without declaring ``<name>``."""


class MissingExtra(DepfakesError):
    def __init__(self, name: str, module: str, extra: str | None, cause: ImportError) -> None:
        install = f"pip install 'depfakes[{extra}]'" if extra else f"pip install {module}"
        super().__init__(
            f"'{name}' needs the Python package '{module}', which is not installed "
            f"({cause}). Install it: {install}"
        )
        self.name = name
        self.extra = extra
