"""`nilemig check`'s cache in .nilemig/cache/: used while nothing changed, renewed for what changed, never trusted
blindly. Each migration here notes in a file every time its upgrade() runs, so the tests count renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli
from lintkit import write_chain

from nilemig.lint import cache, render
from nilemig.lint.rules import NEXT

COUNTED = '''def upgrade():
    with open({runs!r}, "a") as runs:
        runs.write("{name}\\n")
    op.create_table("{name}", sa.Column("id", sa.Integer, primary_key=True))
'''


@pytest.fixture
def chain(project_dir: Path) -> tuple[Path, list[Path]]:
    """Two counted migrations; returns the file they note their runs in, and their paths."""
    runs = project_dir / "runs.txt"
    example = NEXT.join(COUNTED.format(runs=str(runs), name=name) for name in ("first", "second"))
    return runs, write_chain(project_dir, example)


def rendered(runs: Path) -> list[str]:
    """The migrations whose upgrade() ran since the last call, and forget them."""
    names = runs.read_text().split() if runs.exists() else []
    runs.unlink(missing_ok=True)
    return names


def check_output() -> str:
    result = run_cli("check", "--format", "json")
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    return json.dumps(sorted((f["code"], Path(f["file"]).name, f["line"]) for f in data["findings"]))


def test_unchanged_files_are_not_rendered_again(chain, monkeypatch):
    runs, _ = chain
    first = check_output()
    assert rendered(runs) == ["first", "second"]

    def no_alembic(*args, **kwargs):
        raise AssertionError("rendered although nothing changed")

    monkeypatch.setattr(render, "render", no_alembic)
    monkeypatch.setattr(render, "migration_layout", no_alembic)
    assert check_output() == first
    assert rendered(runs) == []


def test_a_changed_file_alone_is_rendered_again(chain, project_dir):
    runs, [first, second] = chain
    before = check_output()
    rendered(runs)
    second.write_text(second.read_text() + '    op.execute("DROP TABLE first CASCADE")\n')
    after = check_output()
    assert rendered(runs) == ["second"]
    assert "NILE008" not in before and "NILE008" in after


def test_settings_are_part_of_the_key_and_read_again(chain, project_dir):
    runs, [_, second] = chain
    second.write_text(second.read_text() + '    op.execute("DROP TABLE first CASCADE")\n')
    assert "NILE008" in check_output()
    rendered(runs)
    pyproject = project_dir / "pyproject.toml"
    pyproject.write_text('[tool.nilemig]\nignore = ["NILE008"]\n')
    assert "NILE008" not in check_output()
    assert rendered(runs) == []
    pyproject.write_text('[tool.nilemig]\nignore = ["NILE998"]\n')
    refused = run_cli("check")
    assert refused.exit_code == 2 and "NILE998" in refused.stderr


@pytest.mark.parametrize("package", ["nilemig", "alembic", "sqlalchemy", "python"])
def test_a_new_version_renders_everything_again(chain, monkeypatch, package):
    runs, _ = chain
    check_output()
    rendered(runs)
    real = cache.versions
    monkeypatch.setattr(cache, "versions", lambda: {**real(), package: "99.0"})
    check_output()
    assert rendered(runs) == ["first", "second"]


def test_a_changed_env_py_renders_everything_again(chain, project_dir):
    runs, _ = chain
    check_output()
    rendered(runs)
    env_py = project_dir / "alembic" / "env.py"
    env_py.write_text(env_py.read_text() + "\n# changed\n")
    check_output()
    assert rendered(runs) == ["first", "second"]


@pytest.mark.parametrize("garbage", [b"\x00\xff not json", b'{"format": 1, "key": "', b"[1, 2]",
                                     b'{"format": 999, "key": "x"}', b""])
def test_a_corrupt_or_foreign_cache_is_ignored_and_rebuilt(chain, project_dir, garbage):
    runs, _ = chain
    first = check_output()
    rendered(runs)
    entries = [p for p in (project_dir / ".nilemig" / "cache").rglob("*.json")]
    assert len(entries) >= 4  # layout, env.py, result, one render per migration
    for entry in entries:
        entry.write_bytes(garbage)
    assert check_output() == first
    assert rendered(runs) == ["first", "second"]
    assert check_output() == first  # rebuilt: used again
    assert rendered(runs) == []


def test_entries_with_the_right_key_but_wrong_content_are_not_trusted(chain, project_dir):
    runs, _ = chain
    first = check_output()
    rendered(runs)
    for entry in (project_dir / ".nilemig" / "cache").rglob("*.json"):
        data = json.loads(entry.read_text())
        entry.write_text(json.dumps({"format": data["format"], "key": data["key"], "findings": {"a": 1},
                                     "statements": [{"sql": 1}], "folders": 3}))
    assert check_output() == first
    assert rendered(runs) == ["first", "second"]


def test_no_cache_renders_and_leaves_the_cache_alone(chain, project_dir):
    runs, _ = chain
    assert run_cli("check", "--no-cache").exit_code in (0, 1)
    assert rendered(runs) == ["first", "second"]
    assert not (project_dir / ".nilemig" / "cache").exists()
    check_output()
    rendered(runs)
    assert run_cli("check", "--no-cache").exit_code in (0, 1)
    assert rendered(runs) == ["first", "second"]


def test_a_new_migration_is_checked_with_the_cached_ones(chain, project_dir):
    runs, [_, second] = chain
    check_output()
    rendered(runs)
    third = second.with_name("0003_example_3.py")
    third.write_text(second.read_text().replace('revision = "0002"', 'revision = "0003"')
                     .replace("down_revision = '0001'", "down_revision = '0002'").replace("second", "third"))
    assert json.loads(run_cli("check", "--format", "json").stdout)["migrations"] == 3
    assert rendered(runs) == ["third"]


def test_what_migrations_print_is_still_shown_from_the_cache(project_dir):
    write_chain(project_dir, 'print("hello from import")\n\n\ndef upgrade():\n    print("hello from upgrade")\n')
    for _ in range(2):
        result = run_cli("check")
        assert "hello from import" in result.stderr and "hello from upgrade" in result.stderr


def test_up_uses_the_same_cache(chain, project):
    runs, _ = chain
    check_output()
    rendered(runs)
    result = run_cli("up")
    assert result.exit_code == 0, result.output
    assert rendered(runs) == ["first", "second"]  # applied once each, not rendered again before that


def test_the_cache_ignores_itself_in_git(chain, project_dir):
    (project_dir / ".gitignore").unlink(missing_ok=True)  # a plain Alembic project has none of nilemig's
    check_output()
    assert (project_dir / ".nilemig" / "cache" / ".gitignore").read_text() == "*\n"


IMPORTED = '''with open({imports!r}, "a") as imports:
    imports.write("{name}\\n")
{labels}

def upgrade():
    op.create_table("{name}", sa.Column("id", sa.Integer, primary_key=True))
'''


def test_unchanged_migrations_are_not_imported_again(project_dir):
    """Alembic links an unchanged migration into the chain from what the cache kept of it (revision,
    down_revision, branch_labels, depends_on), without importing its file."""
    imports = project_dir / "imports.txt"
    labels = ['branch_labels = ("base",)', "", 'depends_on = "0001"\nbranch_labels = "side"', ""]
    example = NEXT.join(IMPORTED.format(imports=str(imports), name=f"t{n}", labels=label)
                        for n, label in enumerate(labels))
    paths = write_chain(project_dir, example)
    first = check_output()
    assert rendered(imports) == ["t0", "t1", "t2", "t3"]
    assert check_output() == first  # the whole answer from the cache
    paths[1].write_text(paths[1].read_text() + "# changed\n")
    assert check_output() == first
    assert rendered(imports) == []  # only a comment changed: its code is the one rendered before
    paths[1].write_text(paths[1].read_text() + '    op.execute("SELECT 1")\n')
    assert check_output() == first
    assert rendered(imports) == ["t1"]
    paths[3].write_text(paths[3].read_text() + '    op.execute("DROP TABLE t0 CASCADE")\n')
    after = check_output()
    assert rendered(imports) == ["t3"]
    assert "NILE008" in after
    assert run_cli("check", "--format", "json", "--no-cache").stdout == run_cli("check", "--format", "json").stdout


def test_versions_read_from_the_packages_match_their_metadata():
    from importlib import metadata

    found = cache.versions()
    for name in ("alembic", "sqlalchemy"):
        assert found[name] == metadata.version(name)
    assert found["nilemig"] == __import__("nilemig").__version__


def test_a_touched_file_keeps_the_cache_valid(chain, monkeypatch):
    """Each file's stat signature is kept with its digest: a new mtime with the same content reads the file
    again and finds it unchanged."""
    runs, paths = chain
    first = check_output()

    def no_alembic(*args, **kwargs):
        raise AssertionError("rendered although no content changed")

    monkeypatch.setattr(render, "render", no_alembic)
    for path in paths:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    assert check_output() == first
    assert rendered(runs) == ["first", "second"]  # the first check alone


def test_an_edit_keeping_size_and_mtime_is_seen(chain, project_dir, monkeypatch):
    """A write changes the file's ctime even when it keeps the size and the mtime."""
    runs, [first, second] = chain
    monkeypatch.setattr(cache, "_RACY_NS", 0)  # signatures of files written just now are recorded too
    old = time.time_ns() - 60_000_000_000
    for path in (first, second):
        os.utime(path, ns=(old, old))
    before = check_output()
    signatures = json.loads((project_dir / ".nilemig" / "cache" / "files.json").read_text())["files"]
    assert str(second.resolve()) in signatures
    text = second.read_text()
    edited = text.replace('op.create_table("second", ', 'op.create_table("first",  ')
    assert len(edited) == len(text) and edited != text
    second.write_text(edited)
    os.utime(second, ns=(old, old))
    after = check_output()
    assert after != before
    assert run_cli("check", "--format", "json", "--no-cache").stdout == run_cli("check", "--format", "json").stdout


def test_an_ignore_comment_added_after_a_finding_renders_and_analyses_nothing(chain, monkeypatch):
    """The most common edit after a check: the findings kept before ignore comments, keyed by the files' code
    without comments, are filtered by the comments as they are now."""
    from nilemig.lint import engine

    runs, [_, second] = chain
    second.write_text(second.read_text() + '    op.execute("DROP TABLE first CASCADE")\n')
    assert "NILE008" in check_output()
    rendered(runs)

    def not_again(*args, **kwargs):
        raise AssertionError("rendered or analysed although only a comment changed")

    monkeypatch.setattr(render, "render", not_again)
    monkeypatch.setattr(engine, "_check_all", not_again)
    second.write_text(second.read_text().replace('CASCADE")\n', 'CASCADE")  # nilemig: ignore[NILE008]\n'))
    assert "NILE008" not in check_output()
    second.write_text(second.read_text().replace("  # nilemig: ignore[NILE008]", ""))
    assert "NILE008" in check_output()
    monkeypatch.undo()
    assert rendered(runs) == []
    assert run_cli("check", "--format", "json", "--no-cache").stdout == run_cli("check", "--format", "json").stdout


def test_a_comment_only_edit_imports_neither_alembic_nor_sqlalchemy(chain, project_dir):
    _, [_, second] = chain
    check_output()
    second.write_text(second.read_text() + "# nilemig: ignore[NILE008]\n")
    code = ("import sys\nfrom nilemig.config import Project\nfrom nilemig.lint.engine import check\n"
            "from pathlib import Path\ncheck(Project(Path.cwd()))\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'sqlalchemy')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=project_dir, capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# The user's own modules a migration imports (a helper, an enum in models.py) change its render as much as its own
# file: each check runs in a process of its own here, as from a shell, so no module stays imported between runs.
USES_TABLE_NAME = {
    "upgrade": 'def upgrade():\n    from helpers import TABLE\n    op.create_table(TABLE, sa.Column("id", sa.Uuid))\n',
    "module": 'from helpers import TABLE\n\n\ndef upgrade():\n    op.create_table(TABLE, sa.Column("id", sa.Uuid))\n',
    "models": 'def upgrade():\n    from models import TABLE\n    op.create_table(TABLE, sa.Column("id", sa.Uuid))\n',
}


def check_in_a_process(project_dir: Path, *args: str) -> list[tuple[str, str]]:
    done = subprocess.run([sys.executable, "-m", "nilemig", "check", "--format", "json", *args], cwd=project_dir,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return sorted((f["code"], f["message"]) for f in json.loads(done.stdout)["findings"])


@pytest.mark.parametrize("imported_from, edited", [("upgrade", "helpers.py"), ("module", "helpers.py"),
                                                    ("module", "names.py"), ("models", "models.py")])
def test_an_edited_module_that_a_migration_imports_renders_it_again(project_dir, imported_from, edited):
    (project_dir / "names.py").write_text('TABLE = "todos"\n')
    (project_dir / "helpers.py").write_text("from names import TABLE  # noqa: F401\n")
    models = project_dir / "models.py"
    models.write_text(models.read_text() + '\nTABLE = "todos"\n')
    write_chain(project_dir, USES_TABLE_NAME[imported_from])
    assert "NILE010" not in {code for code, _ in check_in_a_process(project_dir)}
    target = project_dir / edited
    target.write_text(target.read_text().replace('"todos"', '"tenants"') if edited != "helpers.py"
                      else 'TABLE = "tenants"\n')
    time.sleep(0.01)
    cached = check_in_a_process(project_dir)
    assert "NILE010" in {code for code, _ in cached}  # tenants already exists in every Nile database
    assert cached == check_in_a_process(project_dir, "--no-cache")


def test_an_edited_models_py_that_no_migration_imports_renders_nothing(chain, project_dir):
    runs, _ = chain
    check_in_a_process(project_dir)
    assert rendered(runs) == ["first", "second"]
    models = project_dir / "models.py"
    models.write_text(models.read_text() + "\nEXTRA = 1\n")
    check_in_a_process(project_dir)
    assert rendered(runs) == []


def test_messages_name_files_relative_to_the_current_directory_on_every_run(project_dir, monkeypatch):
    create_x = 'def upgrade():\n    op.create_table("x", sa.Column("id", sa.Integer, primary_key=True))\n'
    write_chain(project_dir, create_x + NEXT + create_x)

    def messages() -> list[str]:
        result = run_cli("check", "--format", "json")
        return sorted(f"{f['file']}: {f['message']}" for f in json.loads(result.stdout)["findings"])

    from_root = messages()
    assert any("alembic/versions/0001_example_1.py:" in m for m in from_root)
    monkeypatch.chdir(project_dir / "alembic")
    cached = messages()
    assert cached == sorted(m.replace("alembic/", "", 2) for m in from_root)
    assert cached == sorted(f"{f['file']}: {f['message']}" for f in json.loads(
        run_cli("check", "--no-cache", "--format", "json").stdout)["findings"])


# What a render reads besides modules: a SQL file next to the migration, an environment variable. Either changes
# the render as much as an edit of the migration does.
READS_A_SQL_FILE = ('from pathlib import Path\n\n\ndef upgrade():\n'
                    '    op.execute((Path(__file__).parent / "table.sql").read_text())\n')
OPENS_A_SQL_FILE = ('import os\n\n\ndef upgrade():\n'
                    '    with open(os.path.join(os.path.dirname(__file__), "table.sql")) as sql:\n'
                    '        op.execute(sql.read())\n')


@pytest.mark.parametrize("migration", [READS_A_SQL_FILE, OPENS_A_SQL_FILE])
def test_an_edited_file_that_a_migration_reads_renders_it_again(project_dir, migration):
    sql = project_dir / "alembic" / "versions" / "table.sql"
    sql.write_text("CREATE TABLE todos (id uuid PRIMARY KEY);\n")
    write_chain(project_dir, migration)
    assert "NILE010" not in {code for code, _ in check_in_a_process(project_dir)}
    sql.write_text("CREATE TABLE tenants (id uuid PRIMARY KEY);\n")
    cached = check_in_a_process(project_dir)
    assert "NILE010" in {code for code, _ in cached}
    assert cached == check_in_a_process(project_dir, "--no-cache")


@pytest.mark.parametrize("read", ['os.environ.get("TABLE_NAME", "todos")', 'os.getenv("TABLE_NAME") or "todos"',
                                  '"tenants" if "TABLE_NAME" in os.environ else "todos"'])
def test_an_environment_variable_that_a_migration_reads_is_part_of_its_key(project_dir, monkeypatch, read):
    write_chain(project_dir, f'import os\n\n\ndef upgrade():\n    op.create_table({read}, sa.Column("id", sa.Uuid))\n')
    monkeypatch.delenv("TABLE_NAME", raising=False)
    assert "NILE010" not in {code for code, _ in check_in_a_process(project_dir)}
    monkeypatch.setenv("TABLE_NAME", "tenants")
    cached = check_in_a_process(project_dir)
    assert "NILE010" in {code for code, _ in cached}
    assert cached == check_in_a_process(project_dir, "--no-cache")
    monkeypatch.delenv("TABLE_NAME")
    assert "NILE010" not in {code for code, _ in check_in_a_process(project_dir)}


LATIN_1 = (b'# -*- coding: latin-1 -*-\n"""caf\xe9"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
           b'revision = "0001"\ndown_revision = None\n\n\ndef upgrade():\n'
           b'    op.create_table("tenants", sa.Column("id", sa.Uuid))  # caf\xe9\n')


def test_a_file_in_another_encoding_is_read_as_python_reads_it(project_dir):
    path = project_dir / "alembic" / "versions" / "0001_latin_1.py"
    path.write_bytes(LATIN_1)
    cold = check_in_a_process(project_dir, "--no-cache")
    assert [code for code, _ in cold] == ["NILE010"]
    assert check_in_a_process(project_dir) == cold == check_in_a_process(project_dir)


def test_a_file_that_is_not_valid_utf_8_is_a_finding_not_a_crash(project_dir):
    path = project_dir / "alembic" / "versions" / "0001_latin_1.py"
    path.write_bytes(LATIN_1.replace(b"# -*- coding: latin-1 -*-\n", b""))
    cold = check_in_a_process(project_dir, "--no-cache")
    assert "MIG007" in {code for code, _ in cold}
    assert check_in_a_process(project_dir) == cold == check_in_a_process(project_dir)
