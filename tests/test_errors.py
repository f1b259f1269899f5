"""Every bad input gets one clear paragraph, a non-zero exit, no traceback, and no password."""

from __future__ import annotations

import psycopg
import pytest
from conftest import current_revision, libpq, new_migration, run_cli, tables, url_string

SECRET = "s3cr%40t:x%2Fy"  # URL-encoded "s3cr@t:x/y"
SECRET_FORMS = ("s3cr", "x/y", "x%2Fy")


def assert_clean_error(result, *phrases, code=1, debug=False):
    assert result.exit_code == code, result.output
    assert ("Traceback" in result.output) == debug
    for form in SECRET_FORMS:
        assert form not in result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


@pytest.mark.parametrize(
    "url, phrase",
    [
        ("", "DATABASE_URL in the environment is empty"),
        ("   ", "DATABASE_URL in the environment is empty"),
        (f"postgress://u:{SECRET}@host:5432/db", "Did you mean postgres://?"),
        (f"mysql://u:{SECRET}@host/db", "unsupported scheme"),
        (f"postgresql://u:{SECRET}@/db", "has no host"),
        (f"postgresql://u:{SECRET}@host:port/db", "malformed"),
        ("just-a-host-name", "is not a URL"),
    ],
)
def test_malformed_urls(project_dir, monkeypatch, url, phrase):
    monkeypatch.setenv("DATABASE_URL", url)
    assert_clean_error(run_cli("up"), phrase)


def test_empty_url_in_dotenv_names_the_file(project_dir):
    (project_dir / ".env").write_text("DATABASE_URL=\n")
    assert_clean_error(run_cli("status"), "DATABASE_URL in .env is empty")


def test_unknown_host(project_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@no-such-host.invalid:5432/db")
    assert_clean_error(run_cli("up"), "could not be found", "no-such-host.invalid")


def test_connection_refused(project_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@127.0.0.1:1/db")
    assert_clean_error(run_cli("status"), "refused the connection")


@pytest.fixture
def password_role(pg_server):
    """A role that must give a password, on a server that checks passwords."""
    admin = libpq(pg_server.admin_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS nilemig_pw")
        conn.execute("CREATE ROLE nilemig_pw LOGIN PASSWORD 'right-password'")
    hba = pg_server.pgdata / "pg_hba.conf" if pg_server.pgdata else None
    if hba is not None:
        original = hba.read_text()
        hba.write_text("local all nilemig_pw scram-sha-256\nhost all nilemig_pw all scram-sha-256\n" + original)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    yield pg_server.admin_url.set(username="nilemig_pw")
    if hba is not None:
        hba.write_text(original)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS nilemig_pw")


def test_wrong_password(project_dir, password_role, monkeypatch):
    wrong = password_role.set(password="s3cr@t:x/y")
    try:
        psycopg.connect(libpq(wrong)).close()
        pytest.skip("this test server does not check passwords")
    except psycopg.OperationalError:
        pass
    monkeypatch.setenv("DATABASE_URL", url_string(wrong))
    assert_clean_error(run_cli("up"), "rejected the password", "nilemig_pw")
    assert_clean_error(run_cli("--debug", "up"), "rejected the password", debug=True)


def test_no_project_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(run_cli("status"), "No nilemig project here", "nilemig init")


def test_ci_without_url_refuses_the_local_database(project_dir, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert_clean_error(run_cli("up"), "CI is set", "DATABASE_URL")


def test_syntax_error_in_a_migration_names_file_and_line(project, database_url):
    path = new_migration("broken", "op.create_table('x' sa.Column('id', sa.Integer))")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "create_table('x' sa" in text)
    result = run_cli("up")
    assert_clean_error(result, "Syntax error in", path.name, f"line {line}:")
    assert current_revision(database_url) is None


def test_import_error_in_a_migration_names_file_and_line(project, database_url):
    path = new_migration("broken import", "pass")
    path.write_text("import no_such_module_for_nilemig\n" + path.read_text())
    assert_clean_error(run_cli("status"), path.name, "line 1", "ModuleNotFoundError")


def test_failed_migration_leaves_the_previous_revision(project, database_url):
    first = new_migration("create account table", "op.create_table('account', sa.Column('id', sa.Integer))")
    second = new_migration(
        "half way",
        "op.add_column('account', sa.Column('email', sa.Text)); op.execute('SELECT * FROM no_such_table')",
    )
    result = run_cli("up")
    first_rev = first.name.split("_")[2]
    assert_clean_error(result, second.name, "no_such_table", f"database is at {first_rev}", "rolled back")
    assert current_revision(database_url) == first_rev
    with psycopg.connect(libpq(database_url)) as conn:
        cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'account'")}
    assert cols == {"id"}


def test_second_migration_creating_the_same_table_names_both_files(project, database_url):
    first = new_migration("create account table", "op.create_table('account', sa.Column('id', sa.Integer))")
    second = new_migration("create account again", "op.create_table('account', sa.Column('id', sa.Integer))")
    # nilemig check stops it before it runs...
    checked = run_cli("up")
    assert_clean_error(checked, "MIG003", "'account' is already created by", first.name, second.name)
    assert current_revision(database_url) is None
    # ...and without the check, the database's error names both files too.
    result = run_cli("up", "--no-check")
    assert_clean_error(result, "'account' is created by more than one migration", first.name, second.name)
    assert current_revision(database_url) == first.name.split("_")[2]


def test_unknown_target_revision(project):
    assert_clean_error(run_cli("up", "nonexistent"), "nonexistent")


def test_debug_shows_a_traceback_without_the_password(project_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@127.0.0.1:1/db")
    result = run_cli("--debug", "status")
    assert_clean_error(result, "refused the connection", debug=True)


def test_password_never_printed_on_success(project_dir, database_url, monkeypatch):
    url = database_url.set(password="s3cr@t:x/y")
    monkeypatch.setenv("DATABASE_URL", url_string(url))
    for args in (("status",), ("status", "--json"), ("up",), ("history",)):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        for form in SECRET_FORMS:
            assert form not in result.output
    assert "account" not in tables(database_url)
