"""How `up`, `down` and `status` talk to the database: one connection, the pre-flight read under the
migration lock on the connection that migrates, and few statements (each is a round trip on a remote Nile).
Behaviour only: how long they take is bench/startup_and_up.py's business."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from conftest import current_revision, libpq, new_migration, run_cli, tables
from sqlalchemy import event
from sqlalchemy.engine import Engine

from nilemig.commands.migrate import UpOptions, up
from nilemig.config import Database, Project
from nilemig.errors import AnswerIsNo
from nilemig.runlock import lock_key
from nilemig.runsettings import RunSettings


@dataclass
class Traffic:
    connections: int = 0
    statements: list[str] = field(default_factory=list)

    def touching(self, word: str) -> list[str]:
        return [s for s in self.statements if word in s]


@contextmanager
def traffic() -> Iterator[Traffic]:
    """Every connection SQLAlchemy opens and every statement it sent (as sent), in this process."""
    seen = Traffic()

    def on_connect(dbapi_connection, record) -> None:
        seen.connections += 1

    def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.statements.append(" ".join(statement.split()))

    event.listen(Engine, "connect", on_connect)
    event.listen(Engine, "after_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(Engine, "connect", on_connect)
        event.remove(Engine, "after_cursor_execute", on_execute)


def create(name: str) -> Path:
    return new_migration(f"create {name}", f"op.create_table('{name}', sa.Column('id', sa.Integer))",
                         f"op.drop_table('{name}')")


def test_up_applies_on_one_connection_with_the_ledger_written_in_alembics_version_statement(project, database_url):
    create("account")
    create("invoice")
    with traffic() as seen:
        assert run_cli("up").exit_code == 0
    assert seen.connections == 1
    # Nothing but the migrations' own statements, Alembic's version statements (carrying the ledger write),
    # and the pre-flight: no savepoint per migration, no ledger statement of its own.
    assert seen.touching("SAVEPOINT") == []
    riding = seen.touching("WITH nilemig_ledger_write AS (INSERT INTO nilemig_ledger")
    assert len(riding) == 2 and all("alembic_version" in s for s in riding), "\n".join(seen.statements)
    assert [s for s in seen.statements if s.startswith("INSERT INTO nilemig_ledger")] == []
    with psycopg.connect(libpq(database_url)) as conn:
        rows = conn.execute("SELECT duration_ms IS NOT NULL, baseline, stamped FROM nilemig_ledger").fetchall()
    assert rows == [(True, False, False)] * 2


def test_no_op_up_and_status_send_two_statements_on_one_connection(project, database_url):
    create("account")
    assert run_cli("up").exit_code == 0
    for command in (("up",), ("status",), ("status", "--json"), ("history",)):
        with traffic() as seen:
            result = run_cli(*command)
        assert result.exit_code == 0, result.output
        assert seen.connections == 1, command
        # The lock (for up; table presence for status) and one read of the revision and the ledger.
        assert len(seen.statements) == 2, (command, seen.statements)
    assert "Nothing to apply" in run_cli("up").stderr


def test_down_records_the_undo_in_alembics_version_statement(project, database_url):
    create("account")
    second = create("invoice")
    assert run_cli("up").exit_code == 0
    with traffic() as seen:
        assert run_cli("down").exit_code == 0
    assert len(seen.touching("WITH nilemig_ledger_write AS (DELETE FROM nilemig_ledger")) == 1
    assert seen.connections == 1  # `down -N` needs no read before the lock to know how many it undoes
    with psycopg.connect(libpq(database_url)) as conn:
        recorded = {r[0] for r in conn.execute("SELECT revision FROM nilemig_ledger")}
    assert second.name.split("_")[2] not in recorded and len(recorded) == 1


def test_plain_alembic_upgrade_records_each_migration_too(project, database_url):
    from alembic import command

    from nilemig.core import alembic_config

    create("account")
    create("invoice")
    config = alembic_config(Project(project))
    config.attributes.pop("nilemig_cli")  # as the `alembic` command runs it: no nilemig pre-flight
    config.set_main_option("sqlalchemy.url", "")
    command.upgrade(config, "head")
    with psycopg.connect(libpq(database_url)) as conn:
        assert conn.execute("SELECT count(*) FROM nilemig_ledger WHERE duration_ms IS NOT NULL").fetchone()[0] == 2
    assert {"account", "invoice"} <= tables(database_url)


def test_the_pre_flight_reads_the_state_under_the_lock(project, database_url):
    """A runner that waited for the lock judges the database as it is once it has the lock: here another
    session edited the ledger while it waited, so it refuses (as drift) instead of applying."""
    first = create("account")
    assert run_cli("up").exit_code == 0
    create("invoice")
    waiting = threading.Event()
    outcome: list[BaseException | None] = []

    def runner() -> None:
        settings = RunSettings(lock_wait_seconds=60, on_notice=lambda message: waiting.set())
        try:
            up(Project(project), Database(database_url, "test"), options=UpOptions(check=False, settings=settings))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    with psycopg.connect(libpq(database_url), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        thread = threading.Thread(target=runner)
        thread.start()
        assert waiting.wait(60), "the runner never said it waits for the lock"
        holder.execute("UPDATE nilemig_ledger SET sha256 = 'edited elsewhere' WHERE revision = %s",
                       (first.name.split("_")[2],))
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key(),))
        thread.join(120)
    assert len(outcome) == 1 and isinstance(outcome[0], AnswerIsNo), outcome
    assert "edited after they were applied" in outcome[0].message
    assert "invoice" not in tables(database_url)
    assert current_revision(database_url) == first.name.split("_")[2]


def test_up_runs_the_check_in_the_pre_flight_then_migrates_or_refuses(project, database_url):
    """nilemig check renders the pending migrations with Alembic inside env.py's run: the run goes on after it,
    or stops before anything is applied."""
    create("account")
    assert run_cli("up").exit_code == 0 and "account" in tables(database_url)
    new_migration("tenant table with a serial key",
                  "op.create_table('todo', sa.Column('tenant_id', sa.Uuid, primary_key=True), "
                  "sa.Column('id', sa.Integer, primary_key=True, autoincrement=True))")
    refused = run_cli("up")
    assert refused.exit_code == 1 and "nilemig check found" in refused.stderr, refused.output
    assert "todo" not in tables(database_url)
