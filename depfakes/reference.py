"""The reference pages' content, generated from the code so the docs cannot drift:
settings (CLI flag, env var, ini key), marker options, handles, hooks, the CLI.

``docs/reference.md`` holds only a placeholder; the mkdocs hook (mkdocs_hooks.py) puts
``markdown()`` in its place at build time.
"""

from __future__ import annotations

import inspect
from typing import Any

from depfakes import hookspecs, registry
from depfakes.config import CORE_SETTINGS, Setting

PLACEHOLDER = "<!-- depfakes-reference -->"


def markdown() -> str:
    return "\n\n".join([_settings(), _marker_options(), _handles(), _hooks(), _cli()]) + "\n"


def _settings() -> str:
    rows = ["| CLI | environment | ini | default | what it does |",
            "| --- | --- | --- | --- | --- |"]
    for setting in [*CORE_SETTINGS, *registry.all_settings()]:
        flag = f"`{setting.flag}`" if setting.cli else "-"
        rows.append(f"| {flag} | `{setting.env}` | `{setting.ini}` | {_default(setting)} | "
                    f"{_cell(setting.help)} |")
    return ("## Settings\n\nEach resolves as marker option > CLI > environment > ini > "
            "default. Safety settings (strictness, record mode) have no marker option.\n\n"
            + "\n".join(rows))


def _default(setting: Setting) -> str:
    if callable(setting.default):
        return "(see text)"
    if setting.default in (None, "", [], {}):
        return "-"
    return f"`{setting.default!r}`"


def _marker_options() -> str:
    lines = ["## Marker options", "",
             "`@pytest.mark.deps(\"name\", \"name:version\", option=value, env={...})`. "
             "Every test also takes `env={\"VAR\": \"dependency.attribute\"}`.", "",
             "| dependency | option | default | what it does |", "| --- | --- | --- | --- |"]
    for name in registry.names():
        provider = registry.get(name)
        versions = " (takes `:version`)" if provider.accepts_version else ""
        if not provider.options:
            lines.append(f"| `{name}`{versions} | - | - | - |")
        for option_name, option in provider.options.items():
            choices = (" One of " + ", ".join(f"`{c!r}`" for c in option.choices) + "."
                       if option.choices else "")
            lines.append(f"| `{name}`{versions} | `{option_name}` | `{option.default!r}` | "
                         f"{_cell(option.help)}{choices} |")
    return "\n".join(lines)


def _handles() -> str:
    lines = ["## Handles", "", "What `deps.<name>` (or the fixture of that name) gives a test.",
             ""]
    for name in registry.names():
        handle = registry.get(name).handle_type
        lines += [f"### `deps.{name}`: `{handle.__name__}`", ""]
        lines += [f"- `{attr}`: {_cell(doc)}" if doc else f"- `{attr}`"
                  for attr, doc in _public_members(handle)]
        lines.append("")
    return "\n".join(lines).rstrip()


def _public_members(cls: type) -> list[tuple[str, str]]:
    members = []
    annotations = inspect.get_annotations(cls)
    for attr in sorted({*annotations, *vars(cls)}):
        if attr.startswith("_"):
            continue
        value = inspect.getattr_static(cls, attr, None)
        target: Any = getattr(value, "fget", None) or getattr(value, "func", None) or value
        doc = (inspect.getdoc(target) or "") if callable(target) else ""
        if callable(value) and not isinstance(value, (property, type)):
            attr += "()"
        members.append((attr, doc.split("\n\n")[0].replace("\n", " ")))
    return members


def _hooks() -> str:
    lines = ["## Hooks", "", "Implement them in a `conftest.py` (or a plugin).", ""]
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("pytest_"):
            doc = (inspect.getdoc(function) or "").replace("\n", " ")
            lines.append(f"- `{name}{inspect.signature(function)}`: {_cell(doc)}")
    return "\n".join(lines)


def _cli() -> str:
    from depfakes.cli import build_parser

    parser = build_parser()
    blocks = ["## The `depfakes` command", "", "```text", parser.format_help().rstrip(), "```"]
    for name, sub in _subparsers(parser):
        blocks += ["", f"### `depfakes {name}`", "", "```text", sub.format_help().rstrip(),
                   "```"]
    return "\n".join(blocks)


def _subparsers(parser: Any, prefix: str = "") -> list[tuple[str, Any]]:
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = _subparsers(sub, f"{prefix}{name} ")
                found += nested or [(f"{prefix}{name}", sub)]
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
