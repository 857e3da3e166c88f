"""The docs cannot rot: every Python block in README.md and docs/ runs, and every shell
line names real commands, flags, extras, make targets and files.

A Python block starts with the file it belongs to (``# conftest.py``, ``# test_x.py``);
a page's blocks become one project (blocks of the same file are joined in order), which
pytest runs. Shell blocks are checked against the real parsers rather than run (they
install packages, start long benchmarks or record from real APIs).
"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```\s*$",
                   re.M | re.S)
HEADER = re.compile(r"#\s*(?P<before>before:\s*)?(?P<name>[\w.-]+\.py)\b"
                    r"(?:\s*\(needs (?P<needs>[\w.-]+)\))?")


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m["lang"], textwrap.dedent(m["body"])) for m in BLOCK.finditer(page.read_text())]


def _id(page: Path) -> str:
    return str(page.relative_to(ROOT))


PYTHON_PAGES = [p for p in PAGES if any(lang == "python" for lang, _ in blocks(p))]


def _headers(page: Path) -> list[tuple[re.Match[str], str]]:
    found = []
    for lang, body in blocks(page):
        if lang == "python":
            header = HEADER.match(body.splitlines()[0])
            assert header, f"{_id(page)}: a python block must start with '# <file>.py':\n{body}"
            found.append((header, body))
    return found


BEFORE_BLOCKS = [(_id(p), h, body) for p in PAGES for h, body in _headers(p) if h["before"]]


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=_id)
def test_python_blocks_run(page, pytester):
    files: dict[str, str] = {}
    for header, body in _headers(page):
        if not header["before"]:
            files[header["name"]] = files.get(header["name"], "") + body + "\n"
    for lang, body in blocks(page):  # an ini block headed "# pytest.ini" is the project's
        if lang == "ini" and body.startswith("# pytest.ini\n"):
            files["pytest.ini"] = body
    for name, text in files.items():
        (pytester.path / name).write_text(text)
    # Not strict: the MongoDB page's tests skip where no MongoDB can run (this machine).
    result = pytester.runpytest_subprocess("-p", "no:randomly", "--deps-no-strict", "-rs")
    outcomes = result.parseoutcomes()
    assert not outcomes.get("failed"), result.stdout.str()
    assert not outcomes.get("errors"), result.stdout.str()
    if outcomes.get("skipped"):
        assert page.name == "mongo.md", result.stdout.str()
        result.stdout.fnmatch_lines(["*mongo is not available here*"])
    else:
        assert outcomes.get("passed", 0) >= 1


@pytest.mark.parametrize(("page", "header", "body"), BEFORE_BLOCKS,
                         ids=[h["name"] for _, h, _ in BEFORE_BLOCKS])
def test_before_blocks_of_migration_guides_run_where_their_library_is(page, header, body,
                                                                       pytester):
    """A "before" block (another library's way) runs on its own, where that library and
    the images it names are available."""
    import importlib.metadata
    import importlib.util

    if header["needs"]:
        try:
            importlib.metadata.distribution(header["needs"])
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{header['needs']} is not installed here")
    for module in re.findall(r"^(?:from|import) (\w+)", body, re.M):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed here")
    for image in re.findall(r"Container\(\"([^\"]+)\"", body):
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True
                          ).returncode != 0:
            pytest.skip(f"image {image} is not available here (no registry)")
    (pytester.path / header["name"]).write_text(body)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:depfakes")
    result.assert_outcomes(passed=body.count("\ndef test_"))


@pytest.fixture(scope="module")
def pytest_flags() -> set[str]:
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout
    return set(re.findall(r"(--[a-z][\w-]*)", help_text))


def _shell_lines() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for lang, body in blocks(page):
            if lang != "sh":
                continue
            text = body.replace("\\\n", " ")
            for line in text.splitlines():
                command = line.split("  #")[0].split(" # ")[0].strip()
                if command:
                    found.append((_id(page), command))
    return found


@pytest.mark.parametrize(("page", "line"), _shell_lines())
def test_shell_lines_name_real_things(page, line, pytest_flags):
    from depfakes.cli import build_parser

    for part in re.split(r"\s*(?:&&|\|\|)\s*", line):
        words = [w for w in shlex.split(part) if "=" not in w or w.startswith("-")]
        program, args = words[0], words[1:]
        if program.endswith("pytest"):
            for arg in args:
                if arg.startswith("--"):
                    assert arg.split("=")[0] in pytest_flags, f"{page}: {arg} is not an option"
        elif program.endswith("depfakes"):
            build_parser().parse_args([a for a in args if a != "[--all]"] or ["--help"])
        elif program == "make":
            makefile = (ROOT / "Makefile").read_text()
            for target in args:
                assert re.search(rf"^{target}:", makefile, re.M), f"{page}: no make {target}"
        elif program == "pip":
            extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
                "optional-dependencies"]
            for wanted in re.findall(r"depfakes\[([\w,]+)\]", part):
                assert set(wanted.split(",")) <= set(extras), f"{page}: unknown extra {wanted}"
        elif program.endswith("python"):
            if args[0] == "-m":  # a module, or a package with __main__
                module = ROOT / args[1].replace(".", "/")
                assert module.with_suffix(".py").exists() or (module / "__main__.py").exists(), \
                    f"{page}: python -m {args[1]} has nothing to run"
            else:
                assert (ROOT / args[0]).exists(), f"{page}: {args[0]} does not exist"
        elif program not in ("git", "bash"):
            pytest.fail(f"{page}: no check for shell line {line!r}; add one")


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_config_blocks_parse(page):
    for lang, body in blocks(page):
        if lang == "ini":
            configparser.ConfigParser().read_string(body)
        elif lang == "toml":
            tomllib.loads(body)
        elif lang == "yaml":
            import yaml

            assert isinstance(yaml.safe_load(body), dict), f"{_id(page)}: odd YAML:\n{body}"


def test_benchmark_tables_match_the_recorded_run():
    """README's and performance.md's numbers are the last `python -m benchmarks
    --write-docs` run's, as recorded in docs/benchmarks.json."""
    import json

    from benchmarks.__main__ import BEGIN, DOC_PAGES, END, RESULTS, markdown_table, rows

    expected = markdown_table(rows(json.loads(RESULTS.read_text())))
    for page in DOC_PAGES:
        text = page.read_text()
        assert text.count(BEGIN) == 1, f"{page.name}: no benchmark table"
        block = text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip()
        assert block == expected, f"{page.name}: numbers differ from docs/benchmarks.json"
