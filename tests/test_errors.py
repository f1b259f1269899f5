"""Every bad input gets one clear paragraph, its exit code, no traceback, and no password.

The table below is the bad-input table: every input a hostile user tried (malformed URLs in
every source, broken chains, bad targets, corrupt configuration, timeouts), each asserting
the exit code, the key words of the message, no traceback, and no fragment of the password,
with and without `--debug`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from conftest import current_revision, libpq, new_migration, run_cli, tables, url_string
from sqlalchemy.engine import URL

# Distinctive pieces of every password used below: none may ever be printed.
SECRET = "s3cr%40t:x%2Fy"  # URL-encoded "s3cr@t:x/y"
SECRET_FORMS = ("s3cr", "x/y", "x%2Fy", "Sup3r", "SecretPw", "Wr0ng")


def assert_clean_error(result, *phrases, code=2, debug: bool | None = False):
    """`debug`: whether a traceback must show (None: it may, as --debug allows)."""
    assert result.exit_code == code, result.output
    if debug is not None:
        assert ("Traceback" in result.output) == debug, result.output
    assert "This is unexpected" not in result.output, result.output
    for form in SECRET_FORMS:
        assert form not in result.output, result.output
    for phrase in phrases:
        assert phrase in result.output, result.output


def assert_clean_both_ways(*args, phrases=(), code=2):
    """The same bad input, without and with --debug: same code and message, a traceback only with --debug."""
    assert_clean_error(run_cli(*args), *phrases, code=code)
    assert_clean_error(run_cli("--debug", *args), *phrases, code=code, debug=None)


@dataclass
class BadUrl:
    url: str
    phrases: tuple[str, ...]
    id: str
    connects: bool = field(default=False)  # reaches the network (so only fails at connecting)


BAD_URLS = [
    BadUrl("", ("is empty",), "empty"),
    BadUrl("   ", ("is empty",), "blank"),
    BadUrl(f"postgress://u:{SECRET}@host:5432/db", ("Did you mean postgres://?",), "scheme-typo"),
    BadUrl(f"mysql://u:{SECRET}@host/db", ("unsupported scheme",), "other-scheme"),
    BadUrl(f"postgresql://u:{SECRET}@/db", ("has no host",), "no-host"),
    BadUrl(f"postgresql://u:{SECRET}@host:port/db", ("malformed",), "port-not-a-number"),
    BadUrl("just-a-host-name", ("is not a URL",), "not-a-url"),
    BadUrl("relq:Sup3rSecretPw%40x@127.0.0.1:5432/x", ("is not a URL", "postgres://relq:***@"), "no-scheme"),
    BadUrl("postgres://relq:Sup3rSecret Pw@127.0.0.1:abc/x", ("malformed",), "space-and-bad-port"),
    BadUrl("postgres://relq:Sup3rSecretPw@x%9@127.0.0.1:5432/db", ("must be URL-encoded", "%40"), "unencoded-at"),
    BadUrl("postgres://relq:Sup3r/SecretPw@127.0.0.1:5432/db", ("must be URL-encoded", "%2F"), "unencoded-slash"),
    BadUrl("postgres://relq:Sup3r?SecretPw@127.0.0.1:5432/db", ("must be URL-encoded", "%3F"), "unencoded-question"),
    BadUrl("postgres://relq:Sup3r#SecretPw@127.0.0.1:5432/db", ("must be URL-encoded", "%23"), "unencoded-hash"),
    BadUrl("postgresql:///db?host=127.0.0.1&port=1&user=relq&password=Sup3rSecretPw", ("refused the connection",),
           "password-in-query", connects=True),
    BadUrl("host=127.0.0.1 port=1 user=relq password=Sup3rSecretPw dbname=x", ("refused the connection",),
           "libpq-keywords", connects=True),
    BadUrl("host=127.0.0.1 port=1 user=relq password='Sup3r SecretPw' dbname=x", ("refused the connection",),
           "libpq-keywords-quoted", connects=True),
    BadUrl("host=127.0.0.1 port=abc password=Sup3rSecretPw", ("port that is not a number",), "libpq-bad-port"),
    BadUrl(f"postgres://u:{SECRET}@no-such-host.invalid:5432/db", ("could not be found", "no-such-host.invalid"),
           "unknown-host", connects=True),
    BadUrl(f"postgres://u:{SECRET}@127.0.0.1:1/db", ("refused the connection",), "refused", connects=True),
]


@pytest.mark.parametrize("bad", BAD_URLS, ids=[b.id for b in BAD_URLS])
@pytest.mark.parametrize("source", ["environment", "dotenv", "option"])
def test_bad_urls(project_dir, monkeypatch, bad, source):
    args: tuple[str, ...] = ("status",)
    if source == "environment":
        monkeypatch.setenv("DATABASE_URL", bad.url)
    elif source == "dotenv":
        if not bad.url.strip():
            pytest.skip("an empty value in .env has its own test")
        quote = "'" if "'" not in bad.url else '"'
        (project_dir / ".env").write_text(f"DATABASE_URL={quote}{bad.url}{quote}\n")
    else:
        args = ("status", "--database-url", bad.url)
    assert_clean_both_ways(*args, phrases=bad.phrases)
    assert not (project_dir / ".nilemig").exists(), "fell back to the local database"


def test_password_on_the_command_line_is_warned_about(project_dir):
    result = run_cli("status", "--database-url", f"postgres://u:{SECRET}@127.0.0.1:1/db")
    assert_clean_error(result, "process list", "PGPASSWORD", "~/.pgpass", "refused the connection")
    assert result.output.count("process list") == 1
    quiet = run_cli("status", "--database-url", "postgres://u@127.0.0.1:1/db")
    assert "process list" not in quiet.output


@pytest.mark.parametrize("content, phrases", [
    ('DATABASE_URL "postgresql://relq:Sup3rSecretPw@127.0.0.1:5432/db"\n',
     (".env, line 1", "the line starting with DATABASE_URL", "could not be parsed", "NAME=value")),
    ('# settings\nOTHER=1\nDATABASE_URL: postgresql://relq:Sup3rSecretPw@h/db\n',
     (".env, line 3", "could not be parsed")),
    ("OTHER=1\nDATABASE_URL\n", ("DATABASE_URL in .env (line 2) is empty",)),
    ("DATABASE_URL=\n", ("DATABASE_URL in .env (line 1) is empty",)),
    ("DATABASE_URL='relq:Sup3rSecretPw@127.0.0.1:5432/x'\n", ("DATABASE_URL in .env (line 1) is not a URL",)),
], ids=["no-equals", "colon", "name-only", "empty", "no-scheme"])
def test_a_dotenv_that_cannot_be_used_refuses(project_dir, content, phrases):
    (project_dir / ".env").write_text(content)
    assert_clean_both_ways("up", phrases=phrases)
    assert not (project_dir / ".nilemig").exists(), "fell back to the local database"


def test_no_project_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_clean_both_ways("status", phrases=("No nilemig project here", "nilemig init"))


def test_ci_without_url_refuses_the_local_database(project_dir, monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert_clean_both_ways("up", phrases=("CI is set", "DATABASE_URL"))


@pytest.mark.parametrize("args, phrases", [
    (("up", "+x"), ("'+x' is not a number of steps up", "up takes head, +N")),
    (("up", "deadbeef99"), ("No such revision or branch 'deadbeef99'", "up takes head, +N")),
    (("up", "nonexistent"), ("nonexistent", "up takes")),
    (("down", "+1"), ("'+1' is not a number of steps down", "down takes -N")),
    (("down", "-x"), ("no such option '-x'", "-N, a revision id, or base")),
    (("down", "--yse"), ("no such option '--yse'",)),
    (("up", "--lock-timeout", "-5"), ("-5 seconds: it must be 0 or more",)),
    (("up", "--statement-timeout", "0"), ("0 seconds: it must be more than 0",)),
    (("up", "--table-lock-timeout", "0"), ("0 seconds: it must be more than 0",)),
    (("down", "--table-lock-timeout", "nan"), ("nan seconds: it must be more than 0",)),
    (("up", "--statement-timeout", "inf"), ("inf seconds: it must be more than 0",)),
    (("up", "--retries", "-1"), ("--retries",)),
])
def test_bad_targets_and_options(project, database_url, args, phrases):
    new_migration("one", "pass")
    assert_clean_both_ways(*args, phrases=phrases)
    assert current_revision(database_url) is None


def test_down_minus_n_and_up_plus_n_work_as_positional_arguments(project, database_url):
    revisions = [new_migration(name, "pass").name.split("_")[2] for name in ("one", "two", "three")]
    assert run_cli("up", "+2").exit_code == 0
    assert current_revision(database_url) == revisions[1]
    assert run_cli("up").exit_code == 0
    result = run_cli("down", "-2", "--yes")
    assert result.exit_code == 0, result.output
    assert current_revision(database_url) == revisions[0]
    assert run_cli("down", "--yes", "--", "-1").exit_code == 0
    assert current_revision(database_url) is None


def test_answering_no_to_a_confirmation(project, database_url, monkeypatch):
    monkeypatch.setattr(sys.modules["nilemig.cli.app"], "has_terminal", lambda: True)
    for name in ("one", "two"):
        new_migration(name, "pass")
    assert run_cli("up").exit_code == 0
    before = current_revision(database_url)
    from typer.testing import CliRunner

    from nilemig.cli import app

    result = CliRunner().invoke(app, ["down", "-2"], input="n\n")
    assert result.exit_code == 1, result.output
    assert "Not confirmed: nothing was changed" in result.output
    assert "This is unexpected" not in result.output and "Traceback" not in result.output
    assert current_revision(database_url) == before


def test_a_down_revision_that_points_nowhere(project):
    path = new_migration("orphan", "pass")
    path.write_text(path.read_text().replace("down_revision", "down_revision = 'nowhere12'\n_was_down_revision"))
    for command in ("status", "up", "history"):
        assert_clean_both_ways(command, phrases=("No migration file has revision 'nowhere12'", "nilemig check"))


def test_an_applied_migration_whose_file_is_gone(project, database_url):
    new_migration("one", "pass")
    second = new_migration("two", "pass")
    assert run_cli("up").exit_code == 0
    second.unlink()
    status = run_cli("status")
    assert status.exit_code == 0, status.output
    assert "Missing:" in status.output and "Not up to date" in status.output and "Up to date." not in status.output
    assert_clean_both_ways("status", "--check", phrases=("Missing:",), code=1)
    assert run_cli("status", "--json").stdout.count('"up_to_date": false') == 1
    for command in (("up",), ("down", "--yes"), ("history",)):
        assert_clean_both_ways(*command, phrases=("no file in the versions directory has", "Restore"), code=1)


def test_a_corrupt_alembic_ini(project):
    (project / "alembic.ini").write_text("garbage\n[alembic\n")
    for command in (("status",), ("new", "x"), ("check",), ("sql",)):
        assert_clean_both_ways(*command, phrases=("alembic.ini, line 1 is not a valid INI file", "[alembic]"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write a read-only directory")
def test_a_read_only_versions_directory(project_dir):
    versions = project_dir / "alembic" / "versions"
    versions.chmod(0o555)
    try:
        assert_clean_both_ways("new", "x", phrases=("Could not use", "Permission denied", "may read and write"))
    finally:
        versions.chmod(0o755)


def test_an_os_error_is_explained_not_unexpected(tmp_path):
    from nilemig.core import explain

    path = tmp_path / "alembic" / "versions" / "x.py"
    explained = explain(PermissionError(13, "Permission denied", str(path)), None)
    assert explained is not None and explained.exit_code == 2
    assert "Permission denied" in str(explained) and "may read and write it" in str(explained)
    assert "Check the path" in str(explain(FileExistsError(17, "File exists", "/etc/passwd"), None))


def test_syntax_error_in_a_migration_names_file_and_line(project, database_url):
    path = new_migration("broken", "op.create_table('x' sa.Column('id', sa.Integer))")
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "create_table('x' sa" in text)
    assert_clean_both_ways("up", phrases=("Syntax error in", path.name, f"line {line}:"))
    assert current_revision(database_url) is None


def test_import_error_in_a_migration_names_file_and_line(project, database_url):
    path = new_migration("broken import", "pass")
    path.write_text("import no_such_module_for_nilemig\n" + path.read_text())
    assert_clean_both_ways("status", phrases=(path.name, "line 1", "ModuleNotFoundError"))


def test_failed_migration_leaves_the_previous_revision(project, database_url):
    first = new_migration("create account table", "op.create_table('account', sa.Column('id', sa.Integer))")
    second = new_migration(
        "half way",
        "op.add_column('account', sa.Column('email', sa.Text)); op.execute('SELECT * FROM no_such_table')",
    )
    result = run_cli("up")
    first_rev = first.name.split("_")[2]
    assert_clean_error(result, second.name, "no_such_table", f"database is at {first_rev}", "rolled back", code=1)
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
    assert_clean_error(checked, "MIG003", "'account' is already created by", first.name, second.name, code=1)
    assert current_revision(database_url) is None
    # ...and without the check, the database's error names both files too.
    result = run_cli("up", "--no-check")
    assert_clean_error(result, "'account' is created by more than one migration", first.name, second.name, code=1)
    assert current_revision(database_url) == first.name.split("_")[2]


def test_debug_shows_a_traceback_without_the_password(project_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"postgres://u:{SECRET}@127.0.0.1:1/db")
    assert_clean_error(run_cli("--debug", "status"), "refused the connection", debug=True)


def test_password_never_printed_on_success(project_dir, database_url, monkeypatch):
    url = database_url.set(password="s3cr@t:x/y")
    monkeypatch.setenv("DATABASE_URL", url_string(url))
    for args in (("status",), ("status", "--json"), ("up",), ("history",)):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        for form in SECRET_FORMS:
            assert form not in result.output
    assert "account" not in tables(database_url)


def test_a_password_in_the_query_string_is_masked_on_success(project_dir, database_url, monkeypatch):
    """The "Database:" line and status --json's "database" field mask a `?password=` too."""
    query = dict(database_url.query, password="Sup3rSecretPw", user=database_url.username)
    url = URL.create("postgresql", database=database_url.database, query=query)
    monkeypatch.setenv("DATABASE_URL", url_string(url))
    for args in (("status",), ("status", "--json")):
        result = run_cli(*args)
        assert result.exit_code == 0, result.output
        assert "Sup3r" not in result.output and "password=***" in result.output


def test_redact_masks_every_form():
    from nilemig.errors import redact, register_secrets_in

    texts = [
        "postgres://relq:Wr0ngSecretA%40x@127.0.0.1:5432/x",
        "relq:Wr0ngSecretB@127.0.0.1:5432/x",
        "postgres://relq:Wr0ngSecretC@x%9@127.0.0.1:5432/db",
        "postgresql:///db?host=127.0.0.1&user=relq&password=Wr0ngSecretD",
        "host=127.0.0.1 user=relq password=Wr0ngSecretE dbname=x",
        "host=127.0.0.1 user=relq password='Wr0ng SecretF' dbname=x",
        "PGPASSWORD=Wr0ngSecretG psql",
    ]
    for text in texts:
        assert "Wr0ng" not in redact(text), text
    register_secrets_in("postgres://relq:Wr0ng Secret/H@h/db")
    assert "Wr0ng" not in redact("could not parse 'Wr0ng Secret/H' or Wr0ng%20Secret%2FH")
    assert redact("postgres://USER:PASSWORD@HOST:5432/DBNAME") == "postgres://USER:PASSWORD@HOST:5432/DBNAME"
    assert redact("applied by root@host, see alembic/env.py:14") == "applied by root@host, see alembic/env.py:14"


# A real PostgreSQL that checks passwords (scram-sha-256 for one role, md5 for another), on 127.0.0.1.

SCRAM_ROLE, MD5_ROLE, RIGHT_PASSWORD = "nilemig_scram", "nilemig_md5", "right-Pw@1/x"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PG15_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def password_server():
    """A PostgreSQL 15 of its own (the system's binaries), listening on 127.0.0.1 with password
    authentication. As root it runs as the `postgres` user, as PostgreSQL refuses to run as root."""
    if not (PG15_BIN / "initdb").is_file():
        pytest.skip(f"no PostgreSQL 15 binaries in {PG15_BIN}")
    run_as = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run PostgreSQL as")
        run_as = "postgres"
    root = Path(tempfile.mkdtemp(prefix="nilemig-pw-"))
    if run_as:
        os.chown(root, account.pw_uid, account.pw_gid)
    pgdata, port = root / "pgdata", _free_port()

    def pg(command: str, *args: str) -> None:
        subprocess.run([str(PG15_BIN / command), *args], check=True, capture_output=True, user=run_as)

    try:
        pg("initdb", "-D", str(pgdata), "-U", "postgres", "-E", "UTF8", "--auth-local=trust")
        (pgdata / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {MD5_ROLE} 127.0.0.1/32 md5\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        pg("pg_ctl", "-w", "-D", str(pgdata), "-l", str(root / "log"), "-o", f"-h 127.0.0.1 -p {port} -k {root}",
           "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL 15 on 127.0.0.1: {exc.stderr}")
    try:
        with psycopg.connect(host=str(root), port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD '{RIGHT_PASSWORD}'")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(f"CREATE ROLE {MD5_ROLE} LOGIN PASSWORD '{RIGHT_PASSWORD}'")
            conn.execute(f"CREATE DATABASE pwdb OWNER {SCRAM_ROLE}")
        yield port
    finally:
        pg("pg_ctl", "-w", "-D", str(pgdata), "stop", "-m", "immediate")
        shutil.rmtree(root, ignore_errors=True)


def _server_url(port: int, role: str, password: str | None = None) -> str:
    return url_string(URL.create("postgresql", username=role, password=password, host="127.0.0.1", port=port,
                                 database="pwdb"))


@pytest.mark.parametrize("role", [SCRAM_ROLE, MD5_ROLE])
@pytest.mark.parametrize("form", ["userinfo", "query", "keywords", "pgpassword", "option"])
def test_wrong_password(project_dir, password_server, monkeypatch, role, form):
    wrong = "Wr0ng@Secret/Pw"
    args: tuple[str, ...] = ("status",)
    if form == "userinfo":
        monkeypatch.setenv("DATABASE_URL", _server_url(password_server, role, wrong))
    elif form == "query":
        monkeypatch.setenv("DATABASE_URL", f"postgresql:///pwdb?host=127.0.0.1&port={password_server}&user={role}"
                                           "&password=Wr0ng%40Secret%2FPw")
    elif form == "keywords":
        monkeypatch.setenv("DATABASE_URL", f"host=127.0.0.1 port={password_server} user={role} "
                                           f"password='{wrong}' dbname=pwdb")
    elif form == "pgpassword":
        monkeypatch.setenv("PGPASSWORD", wrong)
        monkeypatch.setenv("DATABASE_URL", _server_url(password_server, role))
    else:
        args = ("status", "--database-url", _server_url(password_server, role, wrong))
    phrases = ("rejected the password", f"user {role!r}")
    assert_clean_both_ways(*args, phrases=phrases)
    assert "None" not in run_cli(*args).output


def test_right_password_from_pgpassword_or_pgpass(project_dir, password_server, monkeypatch, tmp_path):
    """A password-less URL: libpq reads the password from PGPASSWORD, or from a .pgpass file."""
    monkeypatch.setenv("DATABASE_URL", _server_url(password_server, SCRAM_ROLE))
    monkeypatch.setenv("PGPASSWORD", RIGHT_PASSWORD)
    result = run_cli("status")
    assert result.exit_code == 0, result.output
    assert "process list" not in result.output and "right-Pw" not in result.output

    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    escaped = RIGHT_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    pgpass.write_text(f"127.0.0.1:{password_server}:pwdb:{SCRAM_ROLE}:{escaped}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    result = run_cli("status", "--database-url", _server_url(password_server, SCRAM_ROLE))
    assert result.exit_code == 0, result.output
    assert "process list" not in result.output


def test_no_password_anywhere(project_dir, password_server, monkeypatch, tmp_path):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.setenv("DATABASE_URL", _server_url(password_server, MD5_ROLE))
    assert_clean_both_ways("status", phrases=("none was given", "PGPASSWORD", "~/.pgpass"))


# Permission errors on nilemig's own objects.

@pytest.fixture
def limited_user(pg_server, database_url, monkeypatch):
    """A role that may connect but not create tables in public (PostgreSQL 15's default for non-owners)."""
    if pg_server.pgdata is None:
        pytest.skip("needs the embedded server, where a new role can log in without a password")
    role = "nilemig_limited"
    with psycopg.connect(libpq(pg_server.admin_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
    monkeypatch.setenv("DATABASE_URL", url_string(database_url.set(username=role)))
    yield role
    pg_server.drop_database(database_url)
    with psycopg.connect(libpq(pg_server.admin_url), autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_no_create_on_the_schema_says_what_to_grant(project_dir, database_url, limited_user):
    new_migration("one", "pass")
    assert_clean_both_ways("up", phrases=(
        "permission denied for schema public", f"GRANT CREATE ON SCHEMA public TO {limited_user};"))
    assert current_revision(database_url) is None


def test_no_access_to_the_ledger_says_what_to_grant(project_dir, database_url, limited_user, monkeypatch):
    new_migration("one", "pass")
    admin = os.environ["DATABASE_URL"]
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    assert run_cli("up").exit_code == 0
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute(f"GRANT SELECT ON alembic_version TO {limited_user}")
    monkeypatch.setenv("DATABASE_URL", admin)
    assert_clean_both_ways("status", phrases=(
        "permission denied for table nilemig_ledger",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON nilemig_ledger TO {limited_user};"))


# Signals.

def test_sigint_interrupts_a_run_started_with_sigint_ignored(project, database_url):
    """A background job of a shell script starts with SIGINT ignored; nilemig still stops and rolls back."""
    import signal

    new_migration("slow", "op.create_table('account', sa.Column('id', sa.Integer)); op.execute('SELECT pg_sleep(30)')")
    process = subprocess.Popen(
        [sys.executable, "-c", "from nilemig.cli import main; main()", "up"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 30
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        while not conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                               "AND pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline and process.poll() is None, process.communicate()
            time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "rolled back" in stderr and "Traceback" not in stderr
    assert current_revision(database_url) is None
    assert "account" not in tables(database_url)
