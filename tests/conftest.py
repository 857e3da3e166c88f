from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester):
    """Write a small test project: project(test_source, conftest=..., ini=...)."""

    def write(source: str, *, conftest: str | None = None, ini: str | None = None,
              name: str = "test_project") -> pytest.Pytester:
        pytester.makepyfile(**{name: textwrap.dedent(source)})
        if conftest is not None:
            pytester.makeconftest(textwrap.dedent(conftest))
        if ini is not None:
            pytester.makeini("[pytest]\n" + textwrap.dedent(ini))
        return pytester

    return write
