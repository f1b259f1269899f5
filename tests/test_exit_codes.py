"""The exit-code contract (README, "Exit codes"), pinned for every command.

0: success. 1: the command ran and its answer is "no". 2: nilemig could not do its job
(usage, configuration, connection, permission, internal errors). 130: interrupted
(tests/test_errors.py sends the signal; tests/test_safety.py covers Ctrl-C during `up`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import new_migration, run_cli, url_string
from sqlalchemy.engine import URL

OK, NO, COULD_NOT_RUN = 0, 1, 2

CREATE_ACCOUNT = "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))"
DROP_ACCOUNT = "op.drop_table('account')"
BAD_MODELS = '''
from sqlalchemy import Column, Integer
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Widget(Base):  # tenant-aware, but tenant_id is not in the primary key (NILE001)
    __tablename__ = "widget"
    id = Column(UUID, primary_key=True)
    tenant_id = Column(UUID, nullable=False)
'''


def nothing(root: Path, url: URL) -> None:
    pass


def one_pending(root: Path, url: URL) -> None:
    new_migration("create account", CREATE_ACCOUNT, DROP_ACCOUNT)


def one_applied(root: Path, url: URL) -> None:
    one_pending(root, url)
    assert run_cli("up").exit_code == OK


def two_applied(root: Path, url: URL) -> None:
    one_applied(root, url)
    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))",
                  "op.drop_column('account', 'email')")
    assert run_cli("up").exit_code == OK


def failing_in_the_database(root: Path, url: URL) -> None:
    new_migration("broken", "op.execute('SELECT * FROM no_such_table')")


def unreviewed_destructive(root: Path, url: URL) -> None:
    one_applied(root, url)
    new_migration("drop it", "op.drop_table('account')  # nilemig: destructive: drops data")


def check_error(root: Path, url: URL) -> None:
    new_migration("cascade", "op.execute('DROP TABLE IF EXISTS x CASCADE')")


def edited_after_applied(root: Path, url: URL) -> None:
    one_applied(root, url)
    path = next((root / "alembic" / "versions").glob("*.py"))
    path.write_text(path.read_text() + "\n# edited\n")


def drifted_models(root: Path, url: URL) -> None:
    one_applied(root, url)  # a table the (empty) models do not declare


def bad_models(root: Path, url: URL) -> None:
    (root / "models.py").write_text(BAD_MODELS)


def one_empty(root: Path, url: URL) -> None:
    new_migration("nothing yet", "pass")


def check_error_files_only(root: Path, url: URL) -> None:
    check_error(root, url)


def scratch_url(admin_url: URL) -> str:
    """--scratch-url: the test server as its superuser (database_url's role may not create databases)."""
    return url_string(admin_url)


UNREACHABLE = "postgres://u@127.0.0.1:1/db"
Setup = Callable[[Path, URL], None]
# (setup, arguments (SCRATCH: the test server's URL), exit code)
CONTRACT: list[tuple[Setup, tuple[str, ...], int]] = [
    (nothing, ("init", "other"), OK),
    (nothing, ("new", "x"), OK),
    (one_pending, ("up",), OK),
    (nothing, ("up",), OK),
    (failing_in_the_database, ("up",), NO),
    (unreviewed_destructive, ("up",), NO),
    (check_error, ("up",), NO),
    (edited_after_applied, ("up",), NO),
    (one_pending, ("up", "nope12345"), COULD_NOT_RUN),
    (one_pending, ("up", "--no-such-option"), COULD_NOT_RUN),
    (one_pending, ("up", "--statement-timeout", "0"), COULD_NOT_RUN),
    (one_pending, ("up", "--database-url", UNREACHABLE), COULD_NOT_RUN),
    (one_applied, ("down",), OK),
    (two_applied, ("down", "-2", "--yes"), OK),
    (two_applied, ("down", "-2"), COULD_NOT_RUN),  # no terminal to confirm on, and no --yes
    (one_applied, ("down", "+1"), COULD_NOT_RUN),
    (nothing, ("status",), OK),
    (one_applied, ("status", "--check"), OK),
    (one_pending, ("status", "--check"), NO),
    (nothing, ("status", "--database-url", UNREACHABLE), COULD_NOT_RUN),
    (one_applied, ("rebaseline",), OK),
    (one_applied, ("rebaseline", "nope12345"), COULD_NOT_RUN),
    (one_applied, ("history",), OK),
    (nothing, ("autogen", "nothing"), OK),
    (bad_models, ("autogen", "widget"), NO),
    (one_pending, ("autogen", "x"), COULD_NOT_RUN),
    (nothing, ("diff",), OK),
    (drifted_models, ("diff",), NO),
    (nothing, ("check",), OK),
    (check_error_files_only, ("check",), NO),
    (nothing, ("check", "--format", "xml"), COULD_NOT_RUN),
    (nothing, ("rules",), OK),
    (nothing, ("rules", "NOPE1"), COULD_NOT_RUN),
    (one_pending, ("sql",), OK),
    (one_pending, ("sql", "nope12345:nope67890"), COULD_NOT_RUN),
    (one_pending, ("sql", "a:b:c"), COULD_NOT_RUN),
    (one_empty, ("verify", "--scratch-url", "SCRATCH"), OK),
    (failing_in_the_database, ("verify", "--scratch-url", "SCRATCH"), NO),
    (one_pending, ("verify", "--scratch-url", "postgres://u@127.0.0.1:1/x"), COULD_NOT_RUN),
    (nothing, ("local", "reset"), COULD_NOT_RUN),  # no terminal to confirm on, and no --yes
    (nothing, ("no-such-command",), COULD_NOT_RUN),
]


@pytest.mark.parametrize("setup, args, code", CONTRACT,
                         ids=[f"{' '.join(args)} ({setup.__name__}) -> {code}" for setup, args, code in CONTRACT])
def test_exit_code(project, database_url, pg_server, setup, args, code):
    setup(project, database_url)
    args = tuple(scratch_url(pg_server.admin_url) if arg == "SCRATCH" else arg for arg in args)
    result = run_cli(*args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "This is unexpected" not in result.output


def test_outside_a_project_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (("status",), ("up",), ("check",), ("new", "x")):
        assert run_cli(*args).exit_code == COULD_NOT_RUN
