"""A migration that loses a lock race is rolled back and run again, with backoff; one with an
autocommit_block never is."""

from __future__ import annotations

import threading

import psycopg
import pytest
from conftest import current_revision, libpq, new_migration, run_cli

from nilemig.commands.migrate import UpOptions, up
from nilemig.config import Database, Project
from nilemig.runsettings import RunSettings


@pytest.fixture
def account_table(project):
    new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0


@pytest.fixture
def account(account_table):
    """The revision of a pending migration that alters the account table."""
    return new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))").name.split("_")[2]


@pytest.fixture
def blocker(database_url, account_table):
    """A second session that holds an exclusive lock on account until it rolls back."""
    with psycopg.connect(libpq(database_url)) as conn:
        conn.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
        yield conn


def test_a_migration_blocked_by_another_sessions_lock_succeeds_on_a_retry(project, database_url, account, blocker):
    notices: list[str] = []

    def on_notice(message: str) -> None:
        notices.append(message)
        blocker.rollback()  # the other session finishes its work after our first attempt failed

    settings = RunSettings(table_lock_timeout_seconds=0.3, retries=3, on_notice=on_notice)
    result = up(Project(project), Database(database_url, "test"), options=UpOptions(settings=settings))
    assert [step.revision for step in result.steps] == [account]
    assert len(notices) == 1, notices
    assert "could not lock a table within the table lock timeout" in notices[0] and "retry 1 of 3" in notices[0]
    assert current_revision(database_url) == account


def test_retries_are_said_on_stderr(project, database_url, account, blocker):
    threading.Timer(1.5, blocker.rollback).start()
    result = run_cli("up", "--table-lock-timeout", "0.5")
    assert result.exit_code == 0, result.output
    assert "retry 1 of 5" in result.stderr and "retry" not in result.stdout
    assert current_revision(database_url) == account


def test_out_of_retries_the_migration_fails_and_says_why(project, database_url, account, blocker):
    result = run_cli("up", "--table-lock-timeout", "0.2", "--retries", "1")
    assert result.exit_code == 1, result.output
    assert "retry 1 of 1" in result.stderr and "retry 2" not in result.stderr
    assert "on every attempt" in result.stderr and "--retries" in result.stderr
    assert current_revision(database_url) != account


def test_no_retries_with_retries_0(project, database_url, account, blocker):
    result = run_cli("up", "--table-lock-timeout", "0.2", "--retries", "0")
    assert result.exit_code == 1, result.output
    assert "retry" not in result.stderr
    assert current_revision(database_url) != account


def test_a_migration_with_an_autocommit_block_is_never_retried(project, database_url, account_table, blocker):
    rev = new_migration(
        "outside a transaction",
        "with op.get_context().autocommit_block():\n        op.add_column('account', sa.Column('x', sa.Integer))",
    ).name.split("_")[2]
    result = run_cli("up", "--table-lock-timeout", "0.2", "--no-check")
    assert result.exit_code == 1, result.output
    assert "retry 1" not in result.stderr
    assert "does not retry a migration with an autocommit_block" in result.stderr
    assert current_revision(database_url) != rev
