"""`nilemig check --squawk`: squawk's online-safety findings merged into nilemig's report, told about Nile."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from lintkit import write_chain

from nilemig.config import Project
from nilemig.lint import squawk
from nilemig.lint.engine import check
from nilemig.lint.rules import NEXT

pytestmark = pytest.mark.skipif(
    not (shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))),
    reason="squawk is not installed (the test extra installs squawk-cli)")

ACCOUNT = '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Uuid, primary_key=True), sa.Column("name", sa.Text))
'''
ONLINE_UNSAFE = ACCOUNT + NEXT + '''
def upgrade():
    op.add_column("account", sa.Column("email", sa.Text, nullable=False))
    op.create_index("ix_account_name", "account", ["name"])
    op.alter_column("account", "name", type_=sa.String(100))
    op.create_foreign_key("fk_account_tenant", "account", "tenants", ["id"], ["id"])
'''
TENANT_SERIAL = '''def upgrade():
    op.execute("CREATE TABLE notes (tenant_id uuid NOT NULL, id serial NOT NULL, PRIMARY KEY (tenant_id, id))")
    op.execute("CREATE TABLE counters (id serial PRIMARY KEY, n bigint)")
'''


def _squawk(result) -> list[tuple[str, str, int]]:
    return [(f.code, f.path.name, f.line) for f in result.findings if f.code.startswith(squawk.PREFIX)]


def test_online_unsafe_operations_are_reported_with_file_and_line(project_dir):
    first, second = write_chain(project_dir, ONLINE_UNSAFE)
    found = _squawk(check(Project(project_dir), with_squawk=True))
    for code, line in (("SQUAWK:adding-required-field", 10), ("SQUAWK:require-concurrent-index-creation", 11),
                       ("SQUAWK:changing-column-type", 12), ("SQUAWK:constraint-missing-not-valid", 13)):
        assert (code, second.name, line) in found, found
    # The table is created in the same transaction as its first statements: nothing to say about it.
    assert not [f for f in found if f[1] == first.name and f[0] != "SQUAWK:prefer-text-field"], found
    # What nilemig guarantees (timeouts set on every migration's connection) is not reported.
    assert not [f for f in found if "timeout" in f[0]], found
    # squawk never sees Alembic's own bookkeeping (alembic_version), so no robust-statement advice on it.
    assert not [f for f in found if f[0] == "SQUAWK:prefer-robust-stmts"], found


def test_prefer_identity_is_dropped_on_tenant_aware_tables_only(project_dir):
    [path] = write_chain(project_dir, TENANT_SERIAL)
    result = check(Project(project_dir), with_squawk=True)
    found = _squawk(result)
    assert ("SQUAWK:prefer-identity", path.name, 11) in found, "shared tables may use identity columns"
    tenant_line = [f for f in found if f[2] == 10]
    assert tenant_line == [], f"identity/bigint advice is wrong on a tenant-aware table (NILE003 says uuid): {found}"
    assert ("NILE003", 10) in {(f.code, f.line) for f in result.findings}


def test_bigint_advice_on_tenant_id_is_dropped(project_dir):
    write_chain(project_dir, '''def upgrade():
    op.execute("CREATE TABLE notes (tenant_id integer NOT NULL, id uuid NOT NULL, n integer, PRIMARY KEY (tenant_id, id))")
''')
    result = check(Project(project_dir), with_squawk=True)
    bigint = [f for f in result.findings if f.code == "SQUAWK:prefer-bigint-over-int"]
    assert len(bigint) == 1 and "`integer`" in bigint[0].message.lower(), "only `n`, not tenant_id (NILE002)"
    assert "NILE002" in {f.code for f in result.findings}


def test_autocommit_block_is_not_transaction_nesting(project_dir):
    write_chain(project_dir, ACCOUNT + NEXT + '''
def upgrade():
    with op.get_context().autocommit_block():
        op.create_index("ix_account_name", "account", ["name"], postgresql_concurrently=True)
''')
    found = {f[0] for f in _squawk(check(Project(project_dir), with_squawk=True))}
    assert not found & {"SQUAWK:transaction-nesting", "SQUAWK:ban-uncommitted-transaction",
                        "SQUAWK:require-concurrent-index-creation"}, found


def test_inline_file_and_project_ignores(project_dir):
    [_, second] = write_chain(project_dir, ONLINE_UNSAFE)
    text = second.read_text().replace(
        'nullable=False))', 'nullable=False))  # nilemig: ignore[SQUAWK:adding-required-field]')
    second.write_text("# nilemig: ignore[SQUAWK:changing-column-type]\n" + text)
    (project_dir / "pyproject.toml").write_text(
        '[tool.nilemig]\nignore = ["SQUAWK:constraint-missing-not-valid", "SQUAWK:adding-foreign-key-constraint"]\n')
    found = {f[0] for f in _squawk(check(Project(project_dir), with_squawk=True))}
    assert "SQUAWK:require-concurrent-index-creation" in found
    assert not found & {"SQUAWK:adding-required-field", "SQUAWK:changing-column-type",
                        "SQUAWK:constraint-missing-not-valid"}, found


def test_the_cli_flag_and_the_project_setting(project_dir):
    write_chain(project_dir, ONLINE_UNSAFE)
    assert "SQUAWK:" not in run_cli("check").stdout
    flagged = run_cli("check", "--squawk", "--format", "json")
    assert flagged.exit_code == 0, "squawk's findings are warnings"
    codes = {f["code"] for f in json.loads(flagged.stdout)["findings"]}
    assert "SQUAWK:adding-required-field" in codes
    assert run_cli("check", "--squawk", "--strict").exit_code == 1

    (project_dir / "pyproject.toml").write_text("[tool.nilemig]\nsquawk = true\n")
    assert "SQUAWK:adding-required-field" in run_cli("check").stdout
    assert "SQUAWK:" not in run_cli("check", "--no-squawk").stdout

    (project_dir / "pyproject.toml").write_text('[tool.nilemig]\nsquawk = "yes"\n')
    bad = run_cli("check")
    assert bad.exit_code == 2 and "squawk must be true or false" in bad.stderr


def test_a_clear_message_when_squawk_is_missing(project_dir, monkeypatch):
    write_chain(project_dir, ACCOUNT)
    monkeypatch.setattr(squawk.shutil, "which", lambda *args, **kwargs: None)
    result = run_cli("check", "--squawk")
    assert result.exit_code == 2
    assert "needs squawk" in result.stderr and "nilemig[squawk]" in result.stderr
    assert "Traceback" not in result.output
