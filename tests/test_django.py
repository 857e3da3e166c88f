"""pytest-django on depfakes' postgres: the example Django project (examples/django) as its
users run it, serially and under -n 2 with warnings as errors, and what the bridge promises
beyond it: --reuse-db, migrations in the template key, django_db_setup overrides, other
postgres tests on the same template, and 'off'."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.servers import docker_ok, local_ok, need

pytest.importorskip("pytest_django")

EXAMPLE = Path(__file__).parent.parent / "examples" / "django"
EXAMPLE_TESTS = 28


@pytest.fixture
def django_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A copy of the example Django project (its settings name a server that is not
    there: localhost:5432, read at import)."""
    need(docker_ok() or local_ok(), "a Docker engine or PostgreSQL binaries")
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return pytester


def test_the_example_passes_serially(django_project):
    result = django_project.runpytest_subprocess()
    result.assert_outcomes(passed=EXAMPLE_TESTS)


def test_the_example_passes_under_xdist(django_project):
    result = django_project.runpytest_subprocess("-n", "2", "-W", "error")
    result.assert_outcomes(passed=EXAMPLE_TESTS)


def test_reuse_db_keeps_the_template_until_a_migration_changes(django_project, tmp_path):
    need(local_ok(), "PostgreSQL binaries")
    builds = tmp_path / "builds"
    django_project.makeconftest(textwrap.dedent(f"""
        import pathlib

        def pytest_depfakes_postgres_init(dsn):
            with pathlib.Path({str(builds)!r}).open("a") as fh:
                fh.write("built\\n")
    """))
    django_project.makepyfile(test_toys="""
        import pytest
        from catalog.models import Category

        @pytest.mark.django_db
        def test_categories():
            print("CATEGORIES", sorted(Category.objects.values_list("name", flat=True)))
    """)
    args = ("--reuse-db", "--deps-backend", "postgres=local", "-s", "test_toys.py")
    try:
        django_project.runpytest_subprocess(*args).assert_outcomes(passed=1)
        django_project.runpytest_subprocess(*args).assert_outcomes(passed=1)
        assert builds.read_text().count("built") == 1  # kept: migrate ran once
        (django_project.path / "catalog" / "migrations" / "0003_toys.py").write_text(
            textwrap.dedent("""
            from django.db import migrations

            def add(apps, schema_editor):
                apps.get_model("catalog", "Category").objects.create(name="toys")

            class Migration(migrations.Migration):
                dependencies = [("catalog", "0002_seed_categories")]
                operations = [migrations.RunPython(add)]
            """))
        result = django_project.runpytest_subprocess(*args)
        result.assert_outcomes(passed=1)
        assert builds.read_text().count("built") == 2  # a new migration: rebuilt
        assert "CATEGORIES ['books', 'games', 'toys']" in result.stdout.str()
    finally:
        subprocess.run([sys.executable, "-m", "depfakes.cli", "down", "--project"],
                       cwd=django_project.path, capture_output=True, check=True)


def test_data_a_django_db_setup_override_loads_is_in_every_test(django_project):
    django_project.makeconftest("""
        import pytest

        @pytest.fixture(scope="session")
        def django_db_setup(django_db_setup, django_db_blocker):
            from catalog.models import Category

            with django_db_blocker.unblock():
                Category.objects.create(name="music")
    """)
    django_project.makepyfile(test_loaded="""
        import pytest
        from catalog.models import Category

        @pytest.mark.parametrize("run", range(3))
        @pytest.mark.django_db(transaction=True)
        def test_loaded_once(run):
            assert Category.objects.filter(name="music").count() == 1
            Category.objects.create(name=f"new {run}")  # committed; gone for the next
            assert Category.objects.count() == 4
    """)
    django_project.runpytest_subprocess("test_loaded.py").assert_outcomes(passed=3)


def test_other_postgres_tests_share_the_server_and_the_schema(django_project):
    django_project.makepyfile(test_mixed="""
        import pytest
        from django.db import connection
        from catalog.models import Category

        @pytest.mark.deps("postgres")
        def test_plain(deps):
            with deps.postgres.connect() as conn:
                names = conn.execute("SELECT name FROM catalog_category ORDER BY name")
                assert [row[0] for row in names] == ["books", "games"]
                conn.execute("INSERT INTO catalog_category (name) VALUES ('plain')")

        @pytest.mark.django_db
        def test_django(postgres):
            assert connection.settings_dict["NAME"] == postgres.dbname
            assert Category.objects.count() == 2
    """)
    result = django_project.runpytest_subprocess("test_mixed.py")
    result.assert_outcomes(passed=2)
    assert result.stdout.str().count("postgres ready") == 1


def test_django_tests_refuse_transaction_isolation(django_project):
    django_project.makepyfile(test_txn="""
        import pytest

        @pytest.mark.deps("postgres", isolation="transaction")
        @pytest.mark.django_db
        def test_it():
            pass
    """)
    result = django_project.runpytest_subprocess("test_txn.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*Drop isolation=\"transaction\"*"])


def test_off_leaves_pytest_django_alone(django_project, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite://:memory:")
    monkeypatch.setenv("DEPFAKES_DJANGO", "off")
    result = django_project.runpytest_subprocess("tests/test_models.py", "-k", "seeded")
    result.assert_outcomes(passed=2, deselected=10)
    assert "postgres" not in result.stdout.str()


def test_a_failing_migration_is_reported_as_such(django_project):
    (django_project.path / "catalog" / "migrations" / "0003_broken.py").write_text(
        textwrap.dedent("""
        from django.db import migrations

        def fail(apps, schema_editor):
            raise ValueError("this migration is broken")

        class Migration(migrations.Migration):
            dependencies = [("catalog", "0002_seed_categories")]
            operations = [migrations.RunPython(fail)]
        """))
    result = django_project.runpytest_subprocess("tests/test_models.py", "-k", "seeded")
    result.assert_outcomes(errors=2, deselected=10)
    result.stdout.fnmatch_lines([
        "*Django's migrate (depfakes' Django bridge, or your django_db_setup) failed while "
        "building the template*",
        "*ValueError: this migration is broken*",
    ])
