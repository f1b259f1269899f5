"""`nilemig verify` on scratch databases: good chains pass, each kind of failure is named."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from conftest import libpq, new_migration, run_cli, tables, url_string

ACCOUNT_UP = "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))"
ACCOUNT_DOWN = "op.drop_table('account')"


@pytest.fixture
def scratch(pg_server) -> str:
    return url_string(pg_server.admin_url)


@pytest.fixture
def migrated(example) -> Path:
    """The example project with the walkthrough's autogenerate step done too."""
    assert run_cli("autogen", "create todos").exit_code == 0
    return example


def verify(scratch: str, *args: str):
    result = run_cli("verify", "--scratch-url", scratch, "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_the_example_project_verifies(migrated, scratch, database_url, pg_server):
    databases_before = _databases(pg_server)
    code, report = verify(scratch)
    assert code == 0, report
    assert report["ok"] and report["steps"] == 2 and report["failures"] == []
    assert _databases(pg_server) == databases_before, "the scratch database is dropped"
    assert "todos" not in tables(database_url), "DATABASE_URL's database is never touched"


def test_text_output_and_keep(migrated, scratch, pg_server):
    result = run_cli("verify", "--scratch-url", scratch, "--keep")
    assert result.exit_code == 0, result.output
    assert "every step round-trips" in result.stdout and "Kept the scratch database" in result.stderr
    kept = [name for name in _databases(pg_server) if name.startswith("nilemig_verify_")]
    assert kept
    for name in kept:
        pg_server.drop_database(pg_server.admin_url.set(database=name))


def test_a_downgrade_that_raises(project, scratch):
    path = new_migration("create account", ACCOUNT_UP, "raise RuntimeError('cannot go back')")
    code, report = verify(scratch)
    assert code == 1
    failure = report["failures"][0]
    assert failure["kind"] == "downgrade" and failure["revision"] == path.name.split("_")[2]
    assert failure["file"].endswith(path.name) and "cannot go back" in failure["message"]


def test_a_downgrade_that_leaves_a_column_behind(project, scratch):
    new_migration("create account", ACCOUNT_UP, ACCOUNT_DOWN)
    path = new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))", "pass")
    code, report = verify(scratch)
    assert code == 1
    failure = report["failures"][0]
    assert failure["kind"] == "downgrade" and failure["revision"] == path.name.split("_")[2]
    assert any("account.email" in line for line in failure["details"])


def test_models_that_drift_from_head(migrated, scratch):
    models = migrated / "models.py"
    models.write_text(models.read_text().replace(
        "complete: Mapped[bool | None] = mapped_column(Boolean, default=False)",
        "complete: Mapped[bool | None] = mapped_column(Boolean, default=False)\n"
        "    priority: Mapped[int | None] = mapped_column()"))
    code, report = verify(scratch)
    assert code == 1
    [failure] = report["failures"]
    assert failure["kind"] == "models" and "priority" in " ".join(failure["details"])
    assert failure["revision"] == Path(sorted((migrated / "alembic" / "versions").glob("*todos.py"))[0]).name.split("_")[2]


def test_two_heads(project, scratch):
    first = new_migration("create account", ACCOUNT_UP, ACCOUNT_DOWN)
    second = new_migration("create other", "op.create_table('other', sa.Column('id', sa.Integer))",
                           "op.drop_table('other')")
    revision = first.name.split("_")[2]
    second.write_text(second.read_text().replace(f"'{revision}'", "None").replace(f'"{revision}"', "None"))
    code, report = verify(scratch)
    assert code == 1
    assert report["failures"][0]["kind"] == "heads"


def test_scratch_database_rejects_what_nile_rejects(project, scratch):
    path = new_migration("function", "op.execute(\"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'\")",
                         "op.execute('DROP FUNCTION f()')")
    code, report = verify(scratch)
    assert code == 1
    failure = report["failures"][0]
    assert failure["kind"] == "upgrade" and "NILE007" in failure["message"] and failure["file"].endswith(path.name)


def test_unusable_scratch_server(project):
    result = run_cli("verify", "--scratch-url", "postgresql://nobody:s3cret@127.0.0.1:1/x")
    assert result.exit_code == 2 and "scratch database" in result.stderr
    assert "s3cret" not in result.output and "Traceback" not in result.output


def test_pytest_recipe(migrated, scratch):
    from nilemig.testing import assert_migrations_verify

    assert_migrations_verify(migrated, scratch)
    todos = sorted((migrated / "alembic" / "versions").glob("*todos.py"))[0]
    todos.write_text(todos.read_text().replace("op.drop_table('todos')", "pass").replace('op.drop_table("todos")', "pass"))
    with pytest.raises(AssertionError, match="downgrade"):
        assert_migrations_verify(migrated, scratch)


def test_pytest_alembic_builtin_tests_pass_on_a_fresh_project(migrated, database_url):
    from pytest_alembic import runner, tests
    from pytest_alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(url_string(database_url.set(database=database_url.database)))
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS todos, account, alembic_version, nilemig_ledger")
    config = Config.from_raw_config({"file": str(migrated / "alembic.ini")})
    with runner(config=config, engine=engine) as alembic_runner:
        tests.test_single_head_revision(alembic_runner)
        tests.test_upgrade(alembic_runner)
        tests.test_model_definitions_match_ddl(alembic_runner)
        tests.test_up_down_consistency(alembic_runner)
    engine.dispose()


def _databases(pg_server) -> set[str]:
    with psycopg.connect(libpq(pg_server.admin_url)) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
