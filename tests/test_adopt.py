"""Adopting what users already have: a project with its own env.py (Nile's example), `init --adopt`,
`stamp`, and `baseline` of a database made without migrations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import current_revision, run_cli, tables, url_string

from nilemig.config import Database, Project, normalise_url
from nilemig.core import alembic_config

EXAMPLE = Path(__file__).parent / "fixtures" / "nile_example"
ACCOUNT = "1b2c3d4e5f60"


def assert_clean(result, code: int | None = 0) -> None:
    """Exit `code` (None: any failure), and no traceback or "unexpected" anywhere."""
    assert result.exit_code == code if code is not None else result.exit_code != 0, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output, result.output


@pytest.fixture
def nile_example(tmp_path, monkeypatch) -> Path:
    """A copy of Nile's Alembic example: its own env.py (load_dotenv, DATABASE_URL), a mirrored Tenant."""
    root = tmp_path / "nile-example"
    shutil.copytree(EXAMPLE, root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def example_db(nile_example, database_url, monkeypatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    return nile_example


# --- a foreign env.py -------------------------------------------------------------------------------


def test_up_with_the_examples_own_env_py_ends_cleanly(example_db, database_url):
    result = run_cli("up")
    assert_clean(result)
    assert "applied " + ACCOUNT in result.stderr and "now at " + ACCOUNT in result.stderr
    assert "is not nilemig's" in result.stderr and "init --adopt" in result.stderr
    assert result.stderr.count("is not nilemig's") == 1, "said once"
    assert "INFO" not in result.stderr, "the env.py's logging set-up does not repeat nilemig's progress"
    assert "account" in tables(database_url)
    again = run_cli("up")
    assert_clean(again)
    assert "Nothing to apply" in again.stderr


def test_every_command_works_or_fails_clearly_with_a_foreign_env_py(example_db, database_url):
    assert_clean(run_cli("up"))
    status = run_cli("status")
    assert_clean(status)
    assert "Up to date" in status.stdout and "Ledger:   not kept" in status.stdout
    history = run_cli("history")
    assert_clean(history)
    assert ACCOUNT in history.stdout
    assert_clean(run_cli("check"))
    assert_clean(run_cli("sql"))
    versions = sorted(p.name for p in (example_db / "alembic" / "versions").glob("*.py"))
    diff = run_cli("diff")
    assert_clean(diff, 1)  # its env.py has no filters: Nile's built-ins show as differences
    assert "distributed_transactions" in diff.stdout
    assert sorted(p.name for p in (example_db / "alembic" / "versions").glob("*.py")) == versions, \
        "diff writes no migration"
    autogen = run_cli("autogen", "todos")
    assert_clean(autogen, 1)
    assert "NILE010" in autogen.output and "init --adopt" in autogen.output
    for path in (example_db / "alembic" / "versions").glob("*_todos.py"):
        path.unlink()
    down = run_cli("down")
    assert_clean(down)
    assert "undone  " + ACCOUNT in down.stderr and current_revision(database_url) is None


def test_a_foreign_env_py_gets_the_database_nilemig_chose(nile_example, database_url):
    """No DATABASE_URL anywhere: the env.py's `set_main_option(..., os.environ.get(...))` gets nilemig's choice."""
    result = run_cli("up", "--database-url", url_string(database_url).replace("postgresql+psycopg://", "postgres://"))
    assert_clean(result)
    assert current_revision(database_url) == ACCOUNT


def test_the_url_a_foreign_env_py_reads_is_pinned_and_escaped(nile_example):
    database = Database(normalise_url("postgres://u:p%25c%40t@db.example.com:5432/app"), "test")
    config = alembic_config(Project(nile_example), database)
    config.set_main_option("sqlalchemy.url", None)  # what `os.environ.get("DATABASE_URL")` gives without one
    config.set_main_option("sqlalchemy.url", "postgres://other%host")  # a % configparser would reject
    url = config.get_main_option("sqlalchemy.url")
    assert url == database.url.render_as_string(hide_password=False) and url.startswith("postgresql+psycopg://")
    assert config.get_main_option("other") is None
    config.set_main_option("other", "%%kept")
    assert config.get_main_option("other") == "%kept", "only sqlalchemy.url is pinned"
    offline = alembic_config(Project(nile_example))
    assert offline.get_main_option("sqlalchemy.url") == "postgresql+psycopg://"


def test_a_foreign_env_py_that_raises_is_named(example_db):
    env_py = example_db / "alembic" / "env.py"
    env_py.write_text(env_py.read_text().replace("load_dotenv()", "raise ValueError('Where is your DATABASE_URL?')"))
    result = run_cli("up")
    assert_clean(result, None)
    assert "alembic/env.py, line" in result.stderr and "Where is your DATABASE_URL" in result.stderr
