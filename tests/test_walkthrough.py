"""Nile's Alembic walkthrough, end to end through the CLI, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.config import main as alembic_main
from conftest import current_revision, new_migration, run_cli, tables

ACCOUNT_UP = (
    "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True), "
    "sa.Column('name', sa.String(50), nullable=False), sa.Column('description', sa.Unicode(200)))"
)
ACCOUNT_DOWN = "op.drop_table('account')"


def test_init_lays_out_a_plain_alembic_project(tmp_path, cli):
    result = cli("init", str(tmp_path / "app"))
    assert result.exit_code == 0, result.output
    root = tmp_path / "app"
    for rel in ("alembic.ini", "alembic/env.py", "alembic/script.py.mako", "models.py", ".env.example"):
        assert (root / rel).is_file(), rel
    assert (root / "alembic" / "versions").is_dir()
    assert {".env", ".nilemig/"} <= set((root / ".gitignore").read_text().splitlines())
    assert "DATABASE_URL" not in (root / "alembic.ini").read_text().split("[post_write_hooks]")[0].replace(
        "# ", "").split("[alembic]")[1]


def test_init_twice_overwrites_nothing(tmp_path, cli):
    root = tmp_path / "app"
    cli("init", str(root))
    (root / "models.py").write_text("# mine\n")
    result = cli("init", str(root))
    assert result.exit_code == 0
    assert "exists" in result.stdout and "already initialised" in result.stdout
    assert (root / "models.py").read_text() == "# mine\n"
    assert (root / ".gitignore").read_text().count(".env\n") == 1


def test_init_in_an_existing_alembic_project_says_env_py_is_not_nilemigs(tmp_path, cli):
    root = tmp_path / "legacy"
    (root / "alembic").mkdir(parents=True)
    (root / "alembic" / "env.py").write_text("# the project's own env.py\n")
    result = cli("init", str(root))
    assert result.exit_code == 0
    assert "env.py is not nilemig's" in result.stderr
    assert (root / "alembic" / "env.py").read_text() == "# the project's own env.py\n"


def test_walkthrough_create_account(project, database_url, cli):
    path = new_migration("create account table", ACCOUNT_UP, ACCOUNT_DOWN)
    assert path.name.endswith("_create_account_table.py")
    assert path.parent == project / "alembic" / "versions"

    result = cli("up")
    assert result.exit_code == 0, result.output
    assert "Database: postgresql+psycopg://" in result.stderr
    assert "applied" in result.stderr
    assert "account" in tables(database_url)
    rev = current_revision(database_url)
    assert rev is not None

    again = cli("up")
    assert again.exit_code == 0
    assert "Nothing to apply" in again.stderr
    assert current_revision(database_url) == rev


def test_status_history_and_check(project, database_url, cli):
    first = new_migration("create account table", ACCOUNT_UP, ACCOUNT_DOWN)
    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))",
                  "op.drop_column('account', 'email')")

    result = cli("status", "--check")
    assert result.exit_code == 1
    assert "Pending:  2 migration(s)" in result.stdout

    status = json.loads(cli("status", "--json").stdout)
    assert status["current"] == [] and len(status["pending"]) == 2 and status["up_to_date"] is False
    assert "***" in status["database"] or "@" not in status["database"] or ":" in status["database"]

    assert cli("up", "+1").exit_code == 0
    status = json.loads(cli("status", "--json").stdout)
    assert len(status["pending"]) == 1
    assert status["current"] == [first.name.split("_")[2]]

    history = cli("history")
    assert history.exit_code == 0
    lines = history.stdout.strip().splitlines()
    assert "add email" in lines[0] and "pending" in lines[0]
    assert "create account table" in lines[1] and "current" in lines[1]

    assert cli("up").exit_code == 0
    assert cli("status", "--check").exit_code == 0


def test_down_one_step_and_confirmation(project, database_url, cli):
    new_migration("create account table", ACCOUNT_UP, ACCOUNT_DOWN)
    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))",
                  "op.drop_column('account', 'email')")
    assert cli("up").exit_code == 0

    result = cli("down")
    assert result.exit_code == 0, result.output
    assert "Undid 1 migration(s)" in result.stderr

    refused = cli("down", "base")
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert "account" in tables(database_url)

    done = cli("down", "base", "--yes")
    assert done.exit_code == 0, done.output
    assert "account" not in tables(database_url)
    assert current_revision(database_url) is None


def test_sql_renders_offline_without_a_database(project_dir, cli, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/none")
    new_migration("create account table", ACCOUNT_UP, ACCOUNT_DOWN)
    result = cli("sql")
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE account" in result.stdout
    assert "INSERT INTO alembic_version" in result.stdout
    down = cli("sql", "--down", "head:base")
    assert "DROP TABLE account" in down.stdout


def test_plain_alembic_upgrade_head_works_like_nilemig_up(project, database_url, monkeypatch):
    new_migration("create account table", ACCOUNT_UP, ACCOUNT_DOWN)
    alembic_main(argv=["-c", str(project / "alembic.ini"), "upgrade", "head"])
    assert "account" in tables(database_url)
    assert "Nothing to apply" in run_cli("up").stderr


def test_example_project_runs_the_walkthrough(tmp_path, database_url, monkeypatch, cli):
    from conftest import url_string

    root = tmp_path / "example"
    assert cli("init", "--example", str(root)).exit_code == 0
    monkeypatch.chdir(root)
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    result = cli("up")
    assert result.exit_code == 0, result.output
    assert "account" in tables(database_url)
    assert "tenants" in tables(database_url)


def test_dotenv_supplies_the_url_and_environment_wins(project_dir, database_url, monkeypatch, cli):
    from conftest import url_string

    (project_dir / ".env").write_text(f"DATABASE_URL={url_string(database_url)}\n")
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "(from DATABASE_URL in .env)" in result.stderr

    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@127.0.0.1:1/x")
    assert "(from DATABASE_URL in the environment)" in cli("status").stderr

    ok = cli("status", "--database-url", url_string(database_url))
    assert ok.exit_code == 0 and "(from --database-url)" in ok.stderr


def test_commands_work_from_a_subdirectory(project, cli, monkeypatch):
    (project / "app").mkdir()
    monkeypatch.chdir(project / "app")
    assert cli("status").exit_code == 0
    path = Path(cli("new", "x").stdout.strip())
    assert (Path.cwd() / path).resolve().parent == project / "alembic" / "versions"
