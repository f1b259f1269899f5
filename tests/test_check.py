"""`nilemig check` through the CLI: output formats, ignores, exit codes, and its place in up/autogen."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import new_migration, run_cli, tables
from lintkit import check_example, codes, write_chain

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
    assert result.exit_code == 2 and "NILE999" in result.stderr and "Traceback" not in result.output


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


# --- Real-world chains: tests/fixtures/realworld holds one small reduction per pattern -------------------------

REALWORLD = Path(__file__).parent / "fixtures" / "realworld"
CASES = sorted(p.name for p in REALWORLD.iterdir() if (p / "expected.json").is_file())


def _case(name: str, monkeypatch) -> dict:
    monkeypatch.chdir(REALWORLD / name)
    return json.loads((REALWORLD / name / "expected.json").read_text())


def _name_args(expected: dict) -> list[str]:
    return ["--name", expected["name"]] if "name" in expected else []


@pytest.mark.parametrize("name", CASES)
def test_realworld_chain_gives_exactly_its_findings(name, monkeypatch):
    expected = _case(name, monkeypatch)
    result = run_cli("check", "--format", "json", *_name_args(expected))
    data = json.loads(result.stdout)  # the whole of stdout is the JSON, whatever the migrations print
    found = sorted([f["code"], Path(f["file"]).name, f["line"]] for f in data["findings"])
    assert found == sorted(expected["findings"]), data["findings"]
    assert result.exit_code == expected["exit_code"], result.output
    for code, file, line, text in expected.get("messages", []):
        assert any(text in f["message"] for f in data["findings"]
                   if (f["code"], Path(f["file"]).name, f["line"]) == (code, file, line)), (code, file, line, text)


@pytest.mark.parametrize("name", CASES)
def test_realworld_chain_github_annotations_are_all_workflow_commands(name, monkeypatch):
    expected = _case(name, monkeypatch)
    result = run_cli("check", "--format", "github", *_name_args(expected))
    lines = result.stdout.splitlines()
    assert len(lines) == len(expected["findings"])
    assert all(line.startswith(("::error file=", "::warning file=")) for line in lines), result.stdout


def test_branched_chain_renders_each_migration_once(monkeypatch):
    _case("branched_live_db", monkeypatch)
    result = run_cli("check")
    assert "MIG003" not in result.stdout
    assert result.stdout.count("c_reads.py") == 1
    assert "SELECT id, name FROM account" in result.stdout and "lines 12-14" in result.stdout


def test_what_migrations_print_is_a_note_on_stderr(monkeypatch):
    _case("prints", monkeypatch)
    data = json.loads(run_cli("check", "--format", "json").stdout)
    printed = "".join(p["text"] for p in data["printed"])
    assert "upgrading, 50% done" in printed and "warning on stderr" in printed and "::error file=fake.py" in printed
    text = run_cli("check")
    assert "printed while rendering" in text.stderr and "upgrading, 50% done" in text.stderr
    assert "upgrading" not in text.stdout


def test_missing_import_is_an_error_naming_file_and_line(monkeypatch):
    _case("missing_import", monkeypatch)
    result = run_cli("check")
    assert result.exit_code == 1
    assert "NameError: name 'sqlmodel' is not defined" in result.stdout
    assert "No module named 'nilemig_fixture_pgvector'" in result.stdout
    assert "SyntaxError" in result.stdout and "Traceback" not in result.output


def test_ini_section_without_script_location_names_the_one_to_use(monkeypatch):
    _case("multi_section_ini", monkeypatch)
    result = run_cli("check")
    assert result.exit_code != 0 and "Traceback" not in result.output and "unexpected" not in result.output
    assert "no script_location in its [alembic] section" in result.stderr and "--name core" in result.stderr
    missing = run_cli("check", "-n", "nope")
    assert missing.exit_code != 0 and "has no [nope] section" in missing.stderr
    assert run_cli("sql", "--name", "core").exit_code == 0


def test_ini_without_any_script_location_says_what_to_add(tmp_path, monkeypatch):
    (tmp_path / "alembic.ini").write_text("[alembic]\nsqlalchemy.url = postgresql://localhost/app\n")
    monkeypatch.chdir(tmp_path)
    for command in ("check", "sql"):
        result = run_cli(command)
        assert result.exit_code != 0 and "Traceback" not in result.output and "unexpected" not in result.output
        assert "Add `script_location" in result.stderr


def test_several_version_locations_are_all_checked(project_dir):
    [first, second] = write_chain(project_dir, CASCADE + "# --- next migration ---\n" + UNIQUE_SLUG)
    other = project_dir / "more_versions"
    other.mkdir()
    second.rename(other / second.name)
    ini = project_dir / "alembic.ini"
    ini.write_text(ini.read_text().replace(
        # path_separator = os in nilemig's alembic.ini: locations are separated as in PATH
        "[alembic]\n", f"[alembic]\nversion_locations = %(here)s/alembic/versions{os.pathsep}%(here)s/more_versions\n",
        1))
    data = json.loads(run_cli("check", "--format", "json").stdout)
    assert data["migrations"] == 2
    assert {(f["code"], Path(f["file"]).name) for f in data["findings"]} >= {("NILE008", first.name),
                                                                               ("NILE011", second.name)}


def test_sql_prints_every_migration_it_can_and_marks_the_others(monkeypatch):
    _case("branched_live_db", monkeypatch)
    result = run_cli("sql")
    assert result.exit_code == 1
    assert "CREATE TABLE t" in result.stdout and "DROP TABLE t CASCADE" in result.stdout
    assert "ALTER TABLE account ADD COLUMN slug TEXT" in result.stdout  # what c_reads runs before it reads
    [comment] = [line for line in result.stdout.splitlines() if line.startswith("-- nilemig:")]
    assert "c_reads.py" in comment and "line 12" in comment and "SELECT id, name FROM account" in comment
    assert "c_reads.py line 12" in result.stderr

    _case("missing_import", monkeypatch)
    broken = run_cli("sql")
    assert broken.exit_code == 1 and "CREATE TABLE notes" in broken.stdout
    assert [line.split()[2] for line in broken.stdout.splitlines() if line.startswith("-- nilemig:")] == [
        "versions/a_items.py", "versions/b_vectors.py", "versions/c_broken.py"]


def test_sql_output_stays_sql_when_migrations_print(monkeypatch):
    _case("prints", monkeypatch)
    result = run_cli("sql")
    assert result.exit_code == 0
    assert "upgrading" not in result.stdout and "::error" not in result.stdout
    assert "upgrading, 50% done" in result.stderr


def test_sql_down_needs_a_range(project_dir):
    write_chain(project_dir, CASCADE)
    assert run_cli("sql", "--down").exit_code == 2
    assert "DROP TABLE account CASCADE" in run_cli("sql").stdout


def test_github_annotation_paths_are_relative_to_the_repository_root(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    init(repo / "services" / "api")
    (repo / ".git").mkdir()
    [path] = write_chain(repo / "services" / "api", CASCADE)
    monkeypatch.chdir(repo / "services" / "api" / "alembic")
    monkeypatch.delenv("GITHUB_WORKSPACE", raising=False)
    github = run_cli("check", "--format", "github")
    assert f"::error file=services/api/alembic/versions/{path.name},line=11,title=NILE008::" in github.stdout

    monkeypatch.setenv("GITHUB_WORKSPACE", str(repo / "services"))
    github = run_cli("check", "--format", "github")
    assert f"::error file=api/alembic/versions/{path.name},line=11,title=NILE008::" in github.stdout


def test_github_annotations_escape_properties_and_messages(tmp_path, monkeypatch):
    from nilemig.commands.check import github_annotations
    from nilemig.lint.engine import Finding

    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    finding = Finding("NILE008", "error", "100% sure:\r\nline two, really", tmp_path / "a,b:c" / "m.py", 3)
    assert github_annotations([finding]) == (
        "::error file=a%2Cb%3Ac/m.py,line=3,title=NILE008::100%25 sure:%0D%0Aline two, really\n")


# --- What rendering offline can and cannot do ------------------------------------------------------------------

ACCOUNT = '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
# --- next migration ---
'''


@pytest.mark.parametrize(("body", "code", "text"), [
    ('sa.inspect(op.get_bind()).get_table_names()', "MIG000", "No inspection system"),
    ('sa.Table("account", sa.MetaData(), autoload_with=op.get_bind())', "MIG000", "No inspection system"),
    ('print(len(op.get_bind().execute(sa.text("SELECT 1"))))', "MIG000", "SELECT 1` (len())"),
    ('[r for r in op.get_bind().execute(sa.text("SELECT 2"))]', "MIG000", "SELECT 2` (iterating over it)"),
    ('op.get_bind().execute(sa.select([sa.column("id")]))', "MIG007", "SQLAlchemy 2.0 removed"),
    ('op.get_bind().execute("UPDATE account SET name = name")', "MIG007", "SQLAlchemy 2.0 removed"),
    ('op.alter_column("account", "name", type_=sa.Binary)', "MIG007", "SQLAlchemy 2.0 removed"),
    ('raise RuntimeError("run scripts/backfill.py first")', "MIG007", "RuntimeError: run scripts/backfill.py first"),
])
def test_why_a_migration_stopped(tmp_path, body, code, text):
    result = check_example(tmp_path, ACCOUNT + f"def upgrade():\n    op.drop_column('account', 'name')\n    {body}\n")
    [stopped] = [f for f in result.findings if f.code in ("MIG000", "MIG007")]
    assert (stopped.code, stopped.line) == (code, 11) and text in stopped.message, stopped
    assert "MIG005" in codes(result)  # the drop before the failing line is checked


def test_a_migration_cannot_swallow_the_offline_read(tmp_path):
    result = check_example(tmp_path, ACCOUNT + '''def upgrade():
    try:
        count = op.get_bind().execute(sa.text("SELECT count(*) FROM account")).scalar()
    except Exception:
        count = 0
    op.execute("DROP TABLE account CASCADE")
''')
    assert [(f.code, f.line) for f in result.findings] == [("MIG000", 11)]


def test_statements_executed_on_the_bind_are_checked_with_their_parameters(tmp_path):
    result = check_example(tmp_path, '''def upgrade():
    op.create_table("todos", sa.Column("id", sa.Uuid, primary_key=True), sa.Column("tenant_id", sa.Uuid, primary_key=True),
                    sa.Column("done", sa.Boolean))
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE todos SET done = :done"), {"done": False})
    conn.execute(sa.text("DROP TABLE todos CASCADE"))
''')
    assert [(f.code, f.line) for f in result.findings] == [("NILE012", 13), ("MIG005", 14), ("NILE008", 14)]


@pytest.mark.parametrize(("columns", "change"), [
    ("owner uuid", "ALTER TABLE notes RENAME COLUMN owner TO tenant_id"),
    ("tenant_id text", "ALTER TABLE notes ALTER COLUMN tenant_id TYPE uuid USING NULL"),
])
def test_a_table_becomes_tenant_aware_by_rename_or_retype(tmp_path, columns, change):
    result = check_example(tmp_path, f'''def upgrade():
    op.execute("CREATE TABLE notes (id SERIAL PRIMARY KEY, {columns})")  # nilemig: ignore[NILE002]
# --- next migration ---
def upgrade():
    op.execute("{change}")  # nilemig: ignore[MIG005]
''')
    assert {(f.code, f.path.name, f.line) for f in result.findings if f.code != "MIG004"} == {
        ("NILE001", "0002_example_2.py", 10), ("NILE003", "0002_example_2.py", 10)}


def test_a_tenant_id_that_is_not_uuid_is_only_nile002(tmp_path):
    result = check_example(tmp_path, '''def upgrade():
    op.create_table("todos", sa.Column("id", sa.Integer, primary_key=True), sa.Column("tenant_id", sa.Integer),
                    sa.Column("plan_id", sa.Integer, sa.ForeignKey("tenants.id")), sa.Column("slug", sa.Text, unique=True))
''')
    assert codes(result) == {"NILE002"}


def test_a_late_tenant_table_fixed_in_the_same_migration_is_clean(tmp_path):
    result = check_example(tmp_path, '''def upgrade():
    op.execute("CREATE TABLE notes (id SERIAL PRIMARY KEY, slug text UNIQUE)")

def downgrade():
    op.drop_table("notes")
# --- next migration ---
def upgrade():
    op.add_column("notes", sa.Column("tenant_id", sa.Uuid, nullable=False))
    op.drop_constraint("notes_pkey", "notes", type_="primary")
    op.create_primary_key("notes_pkey", "notes", ["tenant_id", "id"])
    op.alter_column("notes", "id", server_default=None)
    op.drop_constraint("notes_slug_key", "notes", type_="unique")
    op.create_unique_constraint("notes_slug_key", "notes", ["tenant_id", "slug"])

def downgrade():
    op.drop_column("notes", "tenant_id")
''')
    assert result.findings == []
