"""examples/fastapi, an app built like the FastAPI template (settings read at import, a
module-level engine, alembic migrations whose env.py reads the settings, a session-wide
Session, module-scoped TestClient and tokens), runs under depfakes with configuration
only: serially, with -n 2 and -n 4, and each module on a database of its own."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from tests.servers import docker_ok, local_ok, need

pytest.importorskip("sqlmodel")
pytest.importorskip("pydantic_settings")

EXAMPLE = Path(__file__).parent.parent / "examples" / "fastapi"
EXAMPLE_TESTS = 26


@pytest.fixture
def app_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A copy of the example; its settings name no server (POSTGRES_SERVER is unset)."""
    need(docker_ok() or local_ok(), "a Docker engine or PostgreSQL binaries")
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for var in ("POSTGRES_SERVER", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
                "POSTGRES_DB"):
        monkeypatch.delenv(var, raising=False)
    return pytester


@pytest.mark.parametrize("workers", [0, 2, 4])
def test_the_example_passes_unchanged(app_project, workers):
    result = app_project.runpytest_subprocess("-p", "no:randomly",
                                              *(["-n", str(workers)] if workers else []))
    result.assert_outcomes(passed=EXAMPLE_TESTS)


def test_each_module_gets_a_database_of_its_own(app_project):
    # Run after the others (name order): what the api modules' token fixture made is gone,
    # what this module's own module fixture made is there, the seeded superuser always is.
    (app_project.path / "tests" / "test_zz_isolation.py").write_text(textwrap.dedent("""
        import pytest
        from sqlmodel import select

        from app import crud
        from app.core.config import settings
        from app.models import User
        from tests.utils.user import create_random_user


        @pytest.fixture(scope="module")
        def made_for_the_module(db):
            return create_random_user(db).email


        def test_first(db, made_for_the_module):
            emails = {user.email for user in db.exec(select(User)).all()}
            assert emails == {settings.FIRST_SUPERUSER, made_for_the_module}
            create_random_user(db)


        def test_second_sees_the_module_s_writes(db, made_for_the_module):
            assert len(db.exec(select(User)).all()) == 3
            assert crud.get_user_by_email(session=db, email=settings.EMAIL_TEST_USER) is None
        """))
    result = app_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=EXAMPLE_TESTS + 2)
