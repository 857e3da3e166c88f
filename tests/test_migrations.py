"""The template's schema from files (depfakes_postgres_migrations): SQL scripts, a
directory of them, alembic; and a template kept by --deps-reuse that follows them."""

from __future__ import annotations

import textwrap

ALEMBIC_INI = """
[alembic]
script_location = migrations

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %(levelname)s %(message)s
"""

# alembic's own env.py template, cut to the online path: the URL comes from the config.
ENV_PY = """
from logging.config import fileConfig
from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

connectable = engine_from_config(config.get_section(config.config_ini_section, {}),
                                 prefix="sqlalchemy.", poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
"""

REVISION = '''
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down!r}

def upgrade():
    {body}
'''


def _alembic_project(pytester) -> None:
    pytester.makefile(".ini", alembic=textwrap.dedent(ALEMBIC_INI))
    versions = pytester.path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (pytester.path / "migrations" / "env.py").write_text(textwrap.dedent(ENV_PY))
    (versions / "001_accounts.py").write_text(REVISION.format(
        rev="001", down=None, body='op.create_table("accounts", sa.Column("id", sa.Integer, '
        'primary_key=True), sa.Column("email", sa.String(100)))\n    '
        'op.execute("INSERT INTO accounts (email) VALUES (\'admin@example.com\')")'))


def test_sql_files_and_alembic_build_the_template_before_the_hooks(project, pytester,
                                                                   postgres_server,
                                                                   monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    _alembic_project(pytester)
    (pytester.path / "schema").mkdir()
    (pytester.path / "schema" / "002_audit.sql").write_text(
        "INSERT INTO audit VALUES ('second file');")
    (pytester.path / "schema" / "001_audit.sql").write_text(
        "CREATE TABLE audit (note text);\nINSERT INTO audit VALUES ('first file');")
    project("""
        import logging
        import pytest, sqlalchemy as sa

        @pytest.mark.deps("postgres")
        def test_schema(deps, caplog):
            session = deps.postgres.session
            assert session.execute(sa.text("SELECT email FROM accounts ORDER BY id")
                                   ).scalars().all() == ["admin@example.com", "hook@example.com"]
            assert session.execute(sa.text("SELECT note FROM audit")).scalars().all() == [
                "first file", "second file"]
            logging.getLogger("app").warning("still heard")  # env.py's fileConfig undone
            assert "still heard" in caplog.text
    """, conftest="""
        import logging
        import psycopg

        logging.getLogger("app")  # exists before alembic's fileConfig runs

        def pytest_depfakes_postgres_init(dsn):  # after the migrations: seed data
            with psycopg.connect(dsn) as conn:
                conn.execute("INSERT INTO accounts (email) VALUES ('hook@example.com')")
    """, ini="depfakes_postgres_migrations =\n    alembic.ini\n    schema")
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def test_a_kept_template_is_rebuilt_when_a_migration_changes(project, pytester,
                                                             postgres_server, monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    _alembic_project(pytester)
    project("""
        import pytest, sqlalchemy as sa

        @pytest.mark.deps("postgres")
        def test_columns(deps, request):
            columns = deps.postgres.session.execute(sa.text(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'accounts' ORDER BY ordinal_position")).scalars().all()
            assert columns == request.config.getoption("--expect").split(",")

        def test_nothing():
            pass
    """, conftest="""
        def pytest_addoption(parser):
            parser.addoption("--expect")
    """, ini="depfakes_postgres_migrations = alembic.ini")
    args = ("-p", "no:randomly", "--deps-reuse")
    try:
        pytester.runpytest_subprocess(*args, "--expect=id,email").assert_outcomes(passed=2)
        (pytester.path / "migrations" / "versions" / "002_name.py").write_text(
            REVISION.format(rev="002", down="001",
                            body='op.add_column("accounts", sa.Column("name", sa.Text))'))
        pytester.runpytest_subprocess(*args, "--expect=id,email,name").assert_outcomes(
            passed=2)
    finally:  # the kept templates are this test's: the server is shared with other tests
        _drop_kept_templates(postgres_server)


def test_a_kept_template_follows_the_files_and_settings_its_key_names(project, pytester,
                                                                       postgres_server,
                                                                       monkeypatch):
    """depfakes_postgres_init_key: files (their contents) and $VARIABLES (their values) an
    init target reads, so a kept template never goes stale when they change."""
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    (pytester.path / "seeds").mkdir()
    (pytester.path / "seeds" / "plans.txt").write_text("free\n")
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_seeded(deps, request):
            with deps.postgres.connect() as conn:
                rows = conn.execute("SELECT admin, plan FROM seeded").fetchall()
            assert rows == [tuple(request.config.getoption("--expect").split(","))]
    """, conftest="""
        import os, pathlib
        import psycopg

        def pytest_addoption(parser):
            parser.addoption("--expect")

        def pytest_depfakes_postgres_init(dsn):
            plan = pathlib.Path("seeds/plans.txt").read_text().strip()
            with psycopg.connect(dsn) as conn:
                conn.execute("CREATE TABLE seeded (admin text, plan text)")
                conn.execute("INSERT INTO seeded VALUES (%s, %s)",
                             (os.environ["FIRST_SUPERUSER"], plan))
    """, ini="""
        depfakes_postgres_init_key =
            $FIRST_SUPERUSER
            seeds/*.txt
    """)
    args = ("-p", "no:randomly", "--deps-reuse")
    try:
        monkeypatch.setenv("FIRST_SUPERUSER", "ann")
        pytester.runpytest_subprocess(*args, "--expect=ann,free").assert_outcomes(passed=1)
        monkeypatch.setenv("FIRST_SUPERUSER", "bob")
        pytester.runpytest_subprocess(*args, "--expect=bob,free").assert_outcomes(passed=1)
        (pytester.path / "seeds" / "plans.txt").write_text("pro\n")
        pytester.runpytest_subprocess(*args, "--expect=bob,pro").assert_outcomes(passed=1)
    finally:
        _drop_kept_templates(postgres_server)


def _drop_kept_templates(url: str) -> None:
    import psycopg

    from depfakes.providers.postgres import drop_database

    with psycopg.connect(url, autocommit=True) as admin:
        for (name,) in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE "
                                     "'depfakes\\_tpl\\_%'").fetchall():
            drop_database(admin, name)


def test_a_missing_migrations_path_is_one_clear_error(project, pytester, postgres_server,
                                                      monkeypatch):
    monkeypatch.setenv("DEPFAKES_POSTGRES_URL", postgres_server)
    project("""
        import pytest

        @pytest.mark.deps("postgres")
        def test_it(deps):
            pass
    """, ini="depfakes_postgres_migrations = db/schema.sql")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*depfakes_postgres_migrations: 'db/schema.sql' does not "
                                 "exist (relative paths are from *"])
