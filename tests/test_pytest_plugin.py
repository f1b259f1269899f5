"""nilemig's pytest plugin: `nile_database` and `alembic_engine`, in nilemig's own run and in a sample
project's own pytest run, where pytest-alembic's built-in tests use them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import libpq, run_cli, url_string
from sqlalchemy import text

from nilemig.testing import TEST_DATABASE_VAR

SAMPLE_TEST = '''
import os

import psycopg
import pytest
from sqlalchemy import text

from nilemig.testing import assert_migrations_verify


def test_nile_database_has_builtins_and_strictness(nile_database):
    dsn = nile_database.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM tenants").fetchone() == (0,)
        with pytest.raises(psycopg.Error, match="NILE007"):
            conn.execute("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")


def test_alembic_engine_is_on_nile_database(alembic_engine, nile_database):
    assert alembic_engine.url.database == nile_database.database


def test_assert_migrations_verify():
    # verify makes its scratch database as a superuser of the test server, never on nile_database's role.
    assert_migrations_verify(".", scratch_url=os.environ["NILEMIG_TEST_DATABASE_URL"])
'''


@pytest.fixture
def test_server(pg_server, monkeypatch) -> str:
    url = url_string(pg_server.admin_url)
    monkeypatch.setenv(TEST_DATABASE_VAR, url)
    return url


def test_nile_database_in_this_suite(test_server, nile_database, alembic_engine, pg_server):
    with alembic_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM users.users")).scalar() == 0
    assert nile_database.database.startswith("nilemig_test_")
    assert nile_database.database in _databases(pg_server)


def test_nile_database_is_dropped_afterwards(pg_server):
    assert not [name for name in _databases(pg_server) if name.startswith("nilemig_test_")]


def _pytest_8(tmp_path: Path) -> dict[str, str]:
    """pytest-alembic supports pytest 7 and 8 (its collector fails on pytest 9): put pytest 8 first on the path."""
    if int(pytest.__version__.split(".")[0]) < 9:
        return {}
    target = tmp_path / "pytest8"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           "pytest>=8,<9"], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        pytest.skip(f"pytest 8 could not be installed for pytest-alembic: {done.stderr[-400:]}")
    return {"PYTHONPATH": str(target)}


def test_a_sample_project_runs_pytest_alembics_builtin_tests_on_the_fixtures(example, pg_server, tmp_path):
    pytest.importorskip("pytest_alembic")
    assert run_cli("autogen", "create todos").exit_code == 0
    (example / "tests").mkdir()
    (example / "tests" / "conftest.py").write_text("")  # where pytest-alembic binds its built-in tests
    (example / "tests" / "test_db.py").write_text(SAMPLE_TEST)
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "PYTEST_ADDOPTS")}
    env.update(_pytest_8(tmp_path), **{TEST_DATABASE_VAR: url_string(pg_server.admin_url)})
    before = _databases(pg_server)
    done = subprocess.run([sys.executable, "-m", "pytest", "--test-alembic", "-v", "-p", "no:cacheprovider"],
                          cwd=example, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for name in ("test_single_head_revision", "test_upgrade", "test_model_definitions_match_ddl",
                 "test_up_down_consistency"):
        assert f"pytest-alembic::{name} PASSED" in done.stdout, done.stdout
    assert "7 passed" in done.stdout
    assert _databases(pg_server) == before, "every test database is dropped"


def test_a_clear_failure_without_a_server_or_project(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x(nile_database):\n    pass\n")
    env = {key: value for key, value in os.environ.items() if key != TEST_DATABASE_VAR}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:pytest_alembic",
                           str(tmp_path / "test_x.py")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1
    assert "nile_database: No nilemig project here" in done.stdout and "Traceback" not in done.stdout


def _databases(pg_server) -> set[str]:
    with psycopg.connect(libpq(pg_server.admin_url)) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
