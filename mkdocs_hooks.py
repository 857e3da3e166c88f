"""mkdocs hook: fills docs/reference.md from the code (depfakes.reference)."""

from __future__ import annotations

from typing import Any


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    from depfakes import reference

    return markdown.replace(reference.PLACEHOLDER, reference.markdown())
