"""`nilemig check` through the CLI: output formats, ignores, exit codes, and its place in up/autogen."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import new_migration, run_cli, tables
from lintkit import write_chain

from nilemig.commands.init import init

CASCADE = '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("DROP TABLE account CASCADE")
'''
UNIQUE_SLUG = '''def upgrade():
    op.create_table(
        "todos",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.Uuid, primary_key=True),
        sa.Column("slug", sa.Text, unique=True),
    )
'''


def test_the_example_project_is_clean(tmp_path, monkeypatch):
    init(tmp_path / "ex", example=True)
    monkeypatch.chdir(tmp_path / "ex")
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/unreachable")
    result = run_cli("check")
    assert result.exit_code == 0, result.output
    assert "No problems found in 1 migration(s)" in result.stderr


def test_errors_exit_1_grouped_by_file(project_dir):
    [path] = write_chain(project_dir, CASCADE)
    result = run_cli("check")
    assert result.exit_code == 1
    assert path.name in result.stdout and "NILE008" in result.stdout and "error" in result.stdout
    assert "1 error(s)" in result.stderr


def test_warnings_pass_unless_strict(project_dir):
    write_chain(project_dir, UNIQUE_SLUG)
    assert run_cli("check").exit_code == 0
    strict = run_cli("check", "--strict")
    assert strict.exit_code == 1 and "NILE011" in strict.stdout


def test_json_and_github_formats(project_dir):
    [path] = write_chain(project_dir, CASCADE)
    data = json.loads(run_cli("check", "--format", "json").stdout)
    assert data["errors"] == 1 and data["migrations"] == 1
    [finding] = [f for f in data["findings"] if f["code"] == "NILE008"]
    assert finding["file"].endswith(path.name) and finding["line"] == 11 and finding["severity"] == "error"

    github = run_cli("check", "--format", "github")
    assert github.exit_code == 1
    assert f"::error file=alembic/versions/{path.name},line=11,title=NILE008::" in github.stdout

    assert run_cli("check", "--format", "xml").exit_code == 2


def test_inline_and_file_ignores(project_dir):
    [path] = write_chain(project_dir, CASCADE.replace('CASCADE")', 'CASCADE")  # nilemig: ignore[NILE008]'))
    data = json.loads(run_cli("check", "--format", "json").stdout)
    assert "NILE008" not in {f["code"] for f in data["findings"]}
    assert "MIG005" in {f["code"] for f in data["findings"]}

    path.write_text("# nilemig: ignore[NILE008, MIG005]\n" + CASCADE.join(path.read_text().split(CASCADE.replace(
        'CASCADE")', 'CASCADE")  # nilemig: ignore[NILE008]'))))
    data = json.loads(run_cli("check", "--format", "json").stdout)
    assert not {"NILE008", "MIG005"} & {f["code"] for f in data["findings"]}


def test_rules_turned_off_in_pyproject(project_dir):
    write_chain(project_dir, CASCADE)
    (project_dir / "pyproject.toml").write_text('[tool.nilemig]\nignore = ["NILE008"]\n')
    assert run_cli("check").exit_code == 0
    (project_dir / "pyproject.toml").write_text('[tool.nilemig]\nignore = ["NILE999"]\n')
    result = run_cli("check")
    assert result.exit_code == 1 and "NILE999" in result.stderr and "Traceback" not in result.output


def test_table_created_twice_names_both_files(project_dir):
    first, second = write_chain(project_dir, '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
# --- next migration ---
def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
''')
    result = run_cli("check")
    assert result.exit_code == 1
    assert "MIG003" in result.stdout and first.name in result.stdout and second.name in result.stdout


def test_rules_command(cli):
    listing = cli("rules")
    assert listing.exit_code == 0 and "NILE001" in listing.stdout and "MIG003" in listing.stdout
    one = cli("rules", "nile008")
    assert one.exit_code == 0 and "Bad:" in one.stdout and "Good:" in one.stdout and "CASCADE" in one.stdout
    assert cli("rules", "NOPE1").exit_code == 2


def test_up_stops_on_check_errors_and_no_check_skips(project, database_url):
    new_migration("bad", "op.execute('CREATE TABLE account (id integer PRIMARY KEY) WITH (fillfactor = 70)')")
    refused = run_cli("up")
    assert refused.exit_code == 1
    assert "NILE009" in refused.stderr and "Nothing was applied" in refused.stderr
    assert "account" not in tables(database_url)

    forced = run_cli("up", "--no-check")
    assert "Skipping nilemig check" in forced.stderr
    assert forced.exit_code == 0 and "account" in tables(database_url)


def test_up_prints_warnings_and_applies(project, database_url):
    path = new_migration("todos", UNIQUE_SLUG.split("def upgrade():\n    ")[1].strip())
    result = run_cli("up")
    assert result.exit_code == 0, result.output
    assert "NILE011" in result.stderr and path.name in result.stderr


def test_autogen_reports_findings_on_the_new_file(project, database_url):
    models = project / "models.py"
    models.write_text(models.read_text() + '''
import uuid
from sqlalchemy import Text
from sqlalchemy.orm import Mapped, mapped_column


class Todo(TenantAware, Base):
    __tablename__ = "todos"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(Text, unique=True)
''')
    result = run_cli("autogen", "todos")
    assert result.exit_code == 0, result.output
    assert "NILE011" in result.stderr
    skipped = run_cli("autogen", "again", "--no-check")
    assert "Skipping nilemig check" in skipped.stderr


def test_check_needs_no_database(project_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/unreachable")
    write_chain(project_dir, CASCADE)
    assert "NILE008" in run_cli("check").stdout


def test_fixture_corpus_has_no_errors():
    from nilemig.config import Project
    from nilemig.lint.engine import check

    corpus = Path(__file__).parent / "fixtures" / "corpus"
    result = check(Project(corpus))
    assert result.migrations >= 50
    assert result.errors == [], result.errors


def test_migrations_after_one_that_cannot_render_are_still_checked(project_dir):
    first, second, third = write_chain(project_dir, '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
# --- next migration ---
def upgrade():
    op.drop_column("account", "name")
    rows = op.get_bind().execute(sa.text("SELECT id FROM account")).fetchall()
# --- next migration ---
def upgrade():
    op.execute("DROP TABLE account CASCADE")
''')
    result = run_cli("check", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    found = {(f["code"], Path(f["file"]).name, f["line"]) for f in data["findings"]}
    assert ("MIG000", second.name, 11) in found
    assert ("NILE008", third.name, 10) in found
    # What the migration runs before the line that reads the database is checked.
    assert ("MIG005", second.name, 10) in found
    [mig000] = [f for f in data["findings"] if f["code"] == "MIG000"]
    assert "SELECT id FROM account" in mig000["message"] and "the 2 statement(s) before it" in mig000["message"]
