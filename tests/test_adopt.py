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


# --- stamp ------------------------------------------------------------------------------------------


def _ledger(url) -> dict[str, tuple]:
    import psycopg
    from conftest import libpq

    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute("SELECT revision, duration_ms, baseline, stamped FROM nilemig_ledger").fetchall()
    return {r[0]: r[1:] for r in rows}


def _two_migrations():
    from conftest import new_migration

    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer, "
                          "primary_key=True))", "op.drop_table('account')")
    second = new_migration("create notes", "op.create_table('notes', sa.Column('id', sa.Integer, "
                           "primary_key=True))", "op.drop_table('notes')")
    return first.name.split("_")[2], second.name.split("_")[2]


def test_stamp_moves_the_version_without_running_anything(project, database_url):
    first, second = _two_migrations()
    result = run_cli("stamp", "head")
    assert_clean(result)
    assert "No migration ran" in result.stderr and f"marked applied (not run)  {first}" in result.stderr
    assert current_revision(database_url) == second
    assert not {"account", "notes"} & tables(database_url)
    assert _ledger(database_url) == {first: (None, False, True), second: (None, False, True)}

    status = run_cli("status", "--json")
    import json

    report = json.loads(status.stdout)
    assert report["up_to_date"] and report["ledger"]["stamped"] == sorted([first, second])
    text = run_cli("status").stdout
    assert f"Stamped:  {first}" in text and "never ran here" in text
    history = run_cli("history").stdout
    assert "stamped" in history and "applied" not in history.replace("marked applied", "")

    down = run_cli("stamp", first)
    assert_clean(down)
    assert f"no longer marked applied (nothing undone)  {second}" in down.stderr
    assert current_revision(database_url) == first and set(_ledger(database_url)) == {first}
    assert_clean(run_cli("up"))
    assert _ledger(database_url)[second][0] is not None and not _ledger(database_url)[second][2], \
        "a migration that then runs is recorded as applied, with its duration"
    assert "notes" in tables(database_url)


def test_plain_alembic_stamp_is_recorded_as_stamped(project, database_url):
    from alembic.config import main as alembic_main

    first, second = _two_migrations()
    alembic_main(["-c", str(project / "alembic.ini"), "stamp", first])
    assert _ledger(database_url) == {first: (None, False, True)}
    assert_clean(run_cli("up"))
    ledger = _ledger(database_url)
    assert ledger[first] == (None, False, True) and ledger[second][2] is False and ledger[second][0] is not None


def test_stamp_to_base_and_unknown_revisions(project, database_url):
    _two_migrations()
    assert_clean(run_cli("up"))
    result = run_cli("stamp", "base")
    assert_clean(result)
    assert current_revision(database_url) is None and _ledger(database_url) == {}
    assert {"account", "notes"} <= tables(database_url), "stamping never drops anything"
    unknown = run_cli("stamp", "deadbeef")
    assert_clean(unknown, None)
    assert "deadbeef" in unknown.stderr


def test_stamp_with_a_foreign_env_py(example_db, database_url):
    result = run_cli("stamp", "head")
    assert_clean(result)
    assert current_revision(database_url) == ACCOUNT and "account" not in tables(database_url)
    assert "marked applied (not run)  " + ACCOUNT in result.stderr


def test_a_ledger_from_before_stamps_gets_the_column(project, database_url):
    import psycopg
    from conftest import libpq

    first, _ = _two_migrations()
    assert_clean(run_cli("up", first))
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE nilemig_ledger DROP COLUMN stamped")
    assert "stamped" not in run_cli("history").stdout
    assert_clean(run_cli("stamp", "head"))
    assert [how[2] for how in _ledger(database_url).values()].count(True) == 1


# --- init --adopt -----------------------------------------------------------------------------------


def test_adopt_nile_example_then_the_whole_walkthrough(example_db, database_url, pg_server):
    original = (example_db / "alembic" / "env.py").read_text()
    ini = (example_db / "alembic.ini").read_text()
    result = run_cli("init", "--adopt")
    assert_clean(result)
    assert (example_db / "alembic" / "env.py.orig").read_text() == original
    assert (example_db / "alembic.ini").read_text() == ini, "alembic.ini is left alone"
    env_py = (example_db / "alembic" / "env.py").read_text()
    assert "import models" in env_py and "target_metadata = models.Base.metadata" in env_py
    assert "run_migrations(context, target_metadata=target_metadata)" in env_py and "load_dotenv" not in env_py
    assert "Carried over" in result.stdout and "load_dotenv()" in result.stdout
    assert "models.py:11" in result.stderr and "define_tenants" in result.stderr

    up = run_cli("up")
    assert_clean(up)
    assert "is not nilemig's" not in up.stderr and "applied " + ACCOUNT in up.stderr
    autogen = run_cli("autogen", "create todo and tenant models")
    assert_clean(autogen)
    path = Path(autogen.stdout.strip().splitlines()[-1])
    generated = path.read_text()
    assert "todos" in generated
    for builtin in ("distributed_transactions", "'tenants'", '"tenants"', "compute_id"):
        assert builtin not in generated.replace('["tenants.id"]', "").replace("['tenants.id']", ""), builtin
    # The example's models do not declare `account`: review the drop autogenerate proposes, as a user would.
    path.write_text(generated.replace("# nilemig: destructive:", "# nilemig: destructive-ok:"))
    assert_clean(run_cli("up"))
    assert "todos" in tables(database_url)
    assert_clean(run_cli("check"))

    assert_clean(run_cli("diff"))
    verify = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url))
    assert_clean(verify)
    status = run_cli("status")
    assert "Ledger:   not" not in status.stdout and "Up to date" in status.stdout


def test_adopt_carries_configure_options_and_the_code_they_need(nile_example):
    env_py = nile_example / "alembic" / "env.py"
    text = env_py.read_text()
    text = text.replace("import models\n", "import sys\nsys.path.insert(0, '.')\nimport models\nimport audit_models  # noqa\n"
                        "VERSIONS = 'app_versions'\n\n\ndef skip_temp(obj, name, type_, reflected, compare_to):\n"
                        "    return not (name or '').startswith('tmp_')\n")
    text = text.replace("connection=connection, target_metadata=target_metadata",
                        "connection=connection, target_metadata=target_metadata, compare_type=True,\n"
                        "            include_schemas=False, version_table=VERSIONS, include_object=skip_temp")
    text = text.replace("literal_binds=True,", "literal_binds=True, compare_type=True, render_as_batch=True,")
    text = text.replace("target_metadata = models.Base.metadata", "target_metadata = models.Base.metadata\n"
                        "print('hello from env.py')")
    env_py.write_text(text)
    result = run_cli("init", "--adopt")
    assert_clean(result)
    new = env_py.read_text()
    for carried in ("import sys", "sys.path.insert(0, '.')", "import audit_models", "VERSIONS = 'app_versions'",
                    "def skip_temp(", "compare_type=True", "include_schemas=False", "version_table=VERSIONS",
                    "include_object=skip_temp", "render_as_batch=True"):
        assert carried in new, carried
    assert new.index("sys.path.insert") < new.index("import models"), "order kept"
    assert "print(" not in new and "print('hello from env.py')" in result.stdout, "what is not carried is listed"
    compile(new, "env.py", "exec")


def test_nilemigs_env_py_combines_a_projects_filters_with_its_own():
    from nilemig.alembic_env import configure_options

    options = configure_options(None, include_object=lambda obj, name, *rest: name != "tmp_x", compare_type=True,
                                transaction_per_migration=False)
    assert options["compare_type"] is True and options["transaction_per_migration"] is True
    include = options["include_object"]

    class Obj:
        schema = None

    assert include(Obj(), "todos", "table", False, None)
    assert not include(Obj(), "tmp_x", "table", False, None), "the project's filter still applies"
    assert not include(Obj(), "distributed_transactions", "table", True, None), "and so do nilemig's"


def test_adopt_refuses_to_lose_anything(nile_example, tmp_path):
    orig = nile_example / "alembic" / "env.py.orig"
    orig.write_text("# an earlier one\n")
    result = run_cli("init", "--adopt")
    assert_clean(result, None)
    assert "env.py.orig exists" in result.stderr
    assert orig.read_text() == "# an earlier one\n" and "load_dotenv" in (nile_example / "alembic" / "env.py").read_text()
    orig.unlink()
    assert_clean(run_cli("init", "--adopt"))
    again = run_cli("init", "--adopt")
    assert_clean(again, None)
    assert "nilemig's already" in again.stderr
    (tmp_path / "empty").mkdir()
    nowhere = run_cli("init", "--adopt", str(tmp_path / "empty"))
    assert_clean(nowhere, None)
    assert "No alembic.ini" in nowhere.stderr


def test_adopt_reports_a_broken_env_py(nile_example):
    env_py = nile_example / "alembic" / "env.py"
    env_py.write_text("def broken(:\n")
    result = run_cli("init", "--adopt")
    assert_clean(result, None)
    assert "syntax error at line 1" in result.stderr and env_py.read_text() == "def broken(:\n"


# --- baseline ---------------------------------------------------------------------------------------

RAW_SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'it''s complicated');
CREATE TABLE plans (id serial PRIMARY KEY, name varchar(50) NOT NULL UNIQUE, price numeric(10, 2) DEFAULT 0);
CREATE TABLE projects (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    mood mood,
    plan_id integer,
    created timestamptz DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (length(name) > 0)
);
CREATE TABLE tasks (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    title varchar(200),
    done boolean NOT NULL DEFAULT false,
    feeling mood,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id)
);
CREATE INDEX ix_tasks_title ON tasks (tenant_id, title);
CREATE UNIQUE INDEX uq_projects_name ON projects (tenant_id, lower(name));
CREATE VIEW open_tasks AS SELECT tenant_id, id, title FROM tasks WHERE NOT done;
ALTER TABLE tenants ADD COLUMN plan_id integer;
"""


def _raw(url, sql: str) -> None:
    import psycopg
    from conftest import libpq

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(sql)


def _raw_schema(url) -> frozenset[str]:
    import psycopg
    from conftest import libpq

    from nilemig.snapshot import snapshot

    with psycopg.connect(libpq(url), autocommit=True) as conn:
        return snapshot(conn)


@pytest.fixture
def raw_database(project, database_url):
    _raw(database_url, RAW_SCHEMA)
    return database_url


def test_baseline_a_database_made_by_raw_sql(raw_database, project, pg_server):
    _raw(raw_database, "CREATE FUNCTION add_one(i integer) RETURNS integer LANGUAGE sql AS 'SELECT i + 1'")
    before = _raw_schema(raw_database)
    result = run_cli("baseline", "existing schema")
    assert_clean(result)
    path = Path(result.stdout.strip().splitlines()[0])
    text = path.read_text()
    for expected in ("CREATE TYPE mood", "create_table('plans'", "create_table('projects'", "create_table('tasks'",
                     "ix_tasks_title", "uq_projects_name", "CREATE VIEW open_tasks", "DROP TYPE mood",
                     "# nilemig: not reflected: function add_one(integer)", "add_column('tenants'"):
        assert expected in text.replace('"', "'"), expected
    for builtin in ("distributed_transactions", "create_table('tenants'", "uuid_generate_v7", "nilemig_ledger"):
        assert builtin not in text.replace('"', "'"), builtin
    assert "tables" not in result.stderr or "3 table(s)" in result.stderr
    assert "Not reflected: function add_one(integer)" in result.stderr
    assert _raw_schema(raw_database) == before, "nothing ran"
    revision = path.name.split("_")[0] if path.name[0] != "2" else path.name.split("_")[2]
    assert current_revision(raw_database) == revision
    assert _ledger(raw_database) == {revision: (None, True, False)}
    assert "Up to date" in run_cli("status").stdout
    assert "baseline" in run_cli("history").stdout

    verify = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url), "--json")
    import json

    report = json.loads(verify.stdout)
    assert [f["kind"] for f in report["failures"]] in ([], ["models"]), report  # models.py is still the template
    assert_clean(run_cli("check"))



def test_baseline_with_models_then_verify_and_diff(raw_database, project, pg_server):
    pytest.importorskip("sqlacodegen")
    result = run_cli("baseline", "existing schema", "--models")
    assert_clean(result)
    models = (project / "models.py").read_text()
    assert "define_tenants(Base.metadata" in models and "class Projects(TenantAware, Base)" in models
    assert "class Tenants" not in models and "class Plans(Base)" in models
    assert "['tenant_id'], ['tenants.id']" not in models, "TenantAware holds that reference"
    assert "Column('plan_id', Integer)" in models, "the column the user added to tenants"
    verify = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url))
    assert_clean(verify)
    diff = run_cli("diff")
    assert_clean(diff)
    assert "No differences" in diff.stdout


def test_baseline_a_database_ahead_of_its_migrations(project, database_url, pg_server):
    from conftest import new_migration

    new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))",
                  "op.drop_table('account')")
    assert_clean(run_cli("up"))
    _raw(database_url, "CREATE TABLE console_made (id integer PRIMARY KEY, note text)")
    result = run_cli("baseline", "made in the console", "--scratch-url", url_string(pg_server.admin_url))
    assert_clean(result)
    text = Path(result.stdout.strip().splitlines()[0]).read_text()
    assert "console_made" in text and "'account'" not in text.replace('"', "'")
    assert "Up to date" in run_cli("status").stdout
    report = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url), "--json")
    import json

    assert [f["kind"] for f in json.loads(report.stdout)["failures"]] in ([], ["models"])


def test_baseline_refuses_what_it_cannot_do(project, database_url):
    from conftest import new_migration

    nothing = run_cli("baseline", "empty")
    assert_clean(nothing, None)
    assert "Nothing to baseline" in nothing.stderr
    new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))",
                  "op.drop_table('account')")
    behind = run_cli("baseline", "x")
    assert_clean(behind, None)
    assert "nilemig up" in behind.stderr
    assert_clean(run_cli("up"))
    (project / "models.py").write_text("# my models\n")
    _raw(database_url, "CREATE TABLE extra (id integer PRIMARY KEY)")
    mine = run_cli("baseline", "x", "--models")
    assert_clean(mine, None)
    assert "models.py has models of its own" in mine.stderr and (project / "models.py").read_text() == "# my models\n"
