"""Nile-aware autogenerate on a real database that has Nile's built-ins."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from alembic.config import main as alembic_main
from conftest import new_migration, run_cli, tables

ACCOUNT_MODEL = '''

class Account(Base):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Unicode(200))
'''


def upgrade_body(path: Path) -> str:
    text = path.read_text()
    body = text[text.index("def upgrade()"): text.index("def downgrade()")]
    # ruff may format one of them: compare without layout, quote style or trailing commas.
    return re.sub(r",\)", ")", re.sub(r"\s+", "", body.replace("'", '"')))


def versions(root: Path) -> set[Path]:
    return set((root / "alembic" / "versions").glob("*.py"))


def test_example_models_give_exactly_create_todos(example, database_url):
    result = run_cli("diff", "--json")
    assert result.exit_code == 1
    differences = json.loads(result.stdout)["differences"]
    assert [(d["operation"], d["table"]) for d in differences] == [("create_table", "todos")]

    generated = run_cli("autogen", "create todo models")
    assert generated.exit_code == 0, generated.output
    path = Path(generated.stdout.strip()).resolve()
    body = path.read_text()
    assert "create_table" in body and "todos" in body
    for builtin in ("distributed_transactions", "drop_table", "drop_column", "alter_column", "'users'", "auth"):
        assert builtin not in body.split("def downgrade")[0]
    assert "destructive" not in generated.stderr

    applied = run_cli("up")
    assert applied.exit_code == 0, applied.output
    assert "todos" in tables(database_url)
    assert run_cli("diff").exit_code == 0


def test_no_changes_writes_no_file(example):
    run_cli("autogen", "todos")
    assert run_cli("up").exit_code == 0
    before = versions(example)
    result = run_cli("autogen", "nothing changed")
    assert result.exit_code == 0
    assert "No changes" in result.stderr
    assert versions(example) == before


def test_a_user_column_on_tenants_is_emitted(example):
    models = example / "models.py"
    models.write_text(models.read_text().replace(
        "tenants = define_tenants(Base.metadata)",
        "from sqlalchemy import Column, Text\n\ntenants = define_tenants(Base.metadata, Column('plan', Text))",
    ))
    differences = json.loads(run_cli("diff", "--json").stdout)["differences"]
    ops = [(d["operation"], d["table"]) for d in differences]
    assert ("add_column", "tenants") in ops
    assert all(table in ("tenants", "todos") for _, table in ops)
    assert not any(d["operation"] in ("drop_column", "alter_column") for d in differences)


def test_destructive_operations_are_marked_and_up_refuses(example, database_url):
    models = example / "models.py"
    text = models.read_text()
    start, end = text.index("class Account"), text.index("class Todo")
    models.write_text(text[:start] + text[end:])

    result = run_cli("autogen", "drop account")
    assert result.exit_code == 0
    assert "1 destructive operation(s)" in result.stderr and "drop_table('account')" in result.stderr
    path = Path(result.stdout.strip()).resolve()
    assert "# nilemig: destructive: drop_table('account')" in path.read_text()

    refused = run_cli("up")
    assert refused.exit_code == 1
    assert "not reviewed" in refused.stderr and path.name in refused.stderr
    assert "account" in tables(database_url)

    path.write_text(path.read_text().replace("# nilemig: destructive:", "# nilemig: destructive-ok:"))
    applied = run_cli("up")
    assert applied.exit_code == 0, applied.output
    assert "account" not in tables(database_url)


def test_allow_destructive_applies_without_review(example, database_url):
    new_migration("drop it", "op.drop_column('account', 'description')  # nilemig: destructive: drops data")
    assert run_cli("up").exit_code == 1
    assert run_cli("up", "--allow-destructive").exit_code == 0


def test_narrowing_and_not_null_are_destructive_widening_is_not(example):
    run_cli("autogen", "todos")
    assert run_cli("up").exit_code == 0
    models = example / "models.py"
    models.write_text(models.read_text()
                      .replace("mapped_column(String(256))", "mapped_column(String(100))")
                      .replace("Mapped[str | None] = mapped_column(String(1000))",
                               "Mapped[str] = mapped_column(String(2000))"))
    differences = {d["code"].split(",")[1].strip(): d for d in json.loads(run_cli("diff", "--json").stdout)[
        "differences"]}
    assert "truncate" in differences["'title'"]["destructive"]
    assert "NOT NULL" in differences["'description'"]["destructive"]


def test_plain_alembic_autogenerate_matches_nilemig(example):
    alembic_main(argv=["-c", str(example / "alembic.ini"), "revision", "--autogenerate", "-m", "plain"])
    [plain] = versions(example) - {p for p in versions(example) if "account" in p.name}
    plain_body = upgrade_body(plain)
    plain.unlink()

    result = run_cli("autogen", "nilemig")
    path = Path(result.stdout.strip()).resolve()
    assert upgrade_body(path) == plain_body


def test_plain_alembic_writes_no_empty_migration(example):
    run_cli("autogen", "todos")
    assert run_cli("up").exit_code == 0
    before = versions(example)
    alembic_main(argv=["-c", str(example / "alembic.ini"), "revision", "--autogenerate", "-m", "empty"])
    assert versions(example) == before


def test_autogen_with_pending_migrations_says_run_up(example):
    new_migration("pending", "pass")
    result = run_cli("autogen", "x")
    assert result.exit_code == 2 and "nilemig up" in result.stderr


def test_generated_files_are_formatted_when_ruff_is_installed(example):
    import shutil
    import sys

    if not (shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))):
        pytest.skip("ruff is not installed")
    path = Path(run_cli("autogen", "todos").stdout.strip()).resolve()
    assert 'op.create_table(\n        "todos",' in path.read_text()


def test_missing_formatter_never_fails(example, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    result = run_cli("autogen", "todos")
    assert result.exit_code == 0, result.output
    assert "op.create_table('todos'" in Path(result.stdout.strip()).resolve().read_text()
