"""Concurrency, crashes, interrupts, edits and timeouts, with real processes on a real database."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import current_revision, libpq, new_migration, run_cli, tables, url_string

from nilemig.runlock import lock_key

MIGRATIONS = 30


def spawn(project: Path, url, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DATABASE_URL"] = url_string(url)
    return subprocess.Popen([sys.executable, "-m", "nilemig", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_numbered_chain(project: Path, count: int = MIGRATIONS, sleep: float = 0.0) -> None:
    """t0 .. t{count-1}, each in its own migration that also logs itself in run_log (a shared table)."""
    versions = project / "alembic" / "versions"
    down = None
    for n in range(count):
        rev = f"r{n:04d}"
        first = 'op.create_table("run_log", sa.Column("revision", sa.Text, nullable=False))\n    ' if n == 0 else ""
        pause = f'op.execute("SELECT pg_sleep({sleep})")\n    ' if sleep else ""
        (versions / f"{rev}_step.py").write_text(
            f'"""step {n}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f"revision = {rev!r}\ndown_revision = {down!r}\n\n\n"
            f"def upgrade():\n    {first}"
            f'op.create_table("t{n}", sa.Column("id", sa.Integer, primary_key=True))\n    {pause}'
            f"op.execute(\"INSERT INTO run_log (revision) VALUES ('{rev}')\")\n\n\n"
            f'def downgrade():\n    op.drop_table("t{n}")\n'
        )
        down = rev


def assert_consistent(url) -> int:
    """The schema matches the recorded revision exactly; returns how many migrations are applied."""
    revision = current_revision(url)
    applied = 0 if revision is None else int(revision[1:]) + 1
    present = {t for t in tables(url) if t.startswith("t") and t[1:].isdigit()}
    assert present == {f"t{n}" for n in range(applied)}, (revision, sorted(present))
    if applied:
        with psycopg.connect(libpq(url)) as conn:
            logged = [r[0] for r in conn.execute("SELECT revision FROM run_log ORDER BY revision")]
            ledger = {r[0] for r in conn.execute("SELECT revision FROM nilemig_ledger")}
        assert logged == [f"r{n:04d}" for n in range(applied)]
        assert ledger == set(logged)
    return applied


def test_concurrent_runners_apply_each_migration_once(project, database_url):
    # Slow enough that the first runner still holds the lock when the others start.
    write_numbered_chain(project, sleep=0.1)
    runners = [spawn(project, database_url, "up") for _ in range(8)]
    outcomes = [(p.wait(timeout=180), p.stderr.read()) for p in runners]
    for code, stderr in outcomes:
        assert code == 0 or "migration lock" in stderr, stderr
        assert "Traceback" not in stderr
    assert sum("Applied 30 migration(s)" in stderr for _, stderr in outcomes) == 1
    assert any("waiting" in stderr for _, stderr in outcomes)
    assert assert_consistent(database_url) == MIGRATIONS


def test_kill_9_at_random_moments_leaves_a_valid_revision(project, pg_server):
    write_numbered_chain(project, sleep=0.02)
    # Kill moments are spread over how long a whole run takes on this machine, start-up included.
    url = pg_server.create_database()
    started = time.monotonic()
    assert spawn(project, url, "up", "--no-check").wait(timeout=120) == 0
    full_run = time.monotonic() - started
    pg_server.drop_database(url)
    rng = random.Random(20261125)
    seen = set()
    for _ in range(20):
        url = pg_server.create_database()
        try:
            runner = spawn(project, url, "up", "--no-check")
            time.sleep(rng.uniform(0.1, 1.0) * full_run)
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=60)
            seen.add(assert_consistent(url))
            # And the next run picks up where it stopped.
            assert run_cli("up", "--no-check", "--database-url", url_string(url)).exit_code == 0
            assert assert_consistent(url) == MIGRATIONS
        finally:
            pg_server.drop_database(url)
    assert len(seen) > 2, f"the kills should land at different points: {sorted(seen)}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_rolls_back_the_running_migration(project, database_url, sig):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    new_migration("slow", "op.create_table('slow', sa.Column('id', sa.Integer)); op.execute('SELECT pg_sleep(30)')")
    runner = spawn(project, database_url, "up")
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        for _ in range(300):
            if conn.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' "
                            "AND application_name = 'nilemig'").fetchone():
                break
            time.sleep(0.05)
        else:
            runner.kill()
            pytest.fail("the slow migration never started: " + runner.stderr.read())
    runner.send_signal(sig)
    code = runner.wait(timeout=60)
    stderr = runner.stderr.read()
    assert code == 130, stderr
    assert "Interrupted" in stderr and "rolled back" in stderr and first.name.split("_")[2] in stderr
    assert "Traceback" not in stderr
    assert current_revision(database_url) == first.name.split("_")[2]
    assert "slow" not in tables(database_url) and "account" in tables(database_url)


def test_edited_migration_is_detected_and_rebaselined(project, database_url):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0
    first.write_text(first.read_text().replace("sa.Integer", "sa.BigInteger"))

    status = run_cli("status")
    assert "Edited:" in status.stdout and first.name in status.stdout
    data = json.loads(run_cli("status", "--json").stdout)
    assert data["ledger"]["edited"][0]["revision"] == first.name.split("_")[2]

    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))")
    refused = run_cli("up")
    assert refused.exit_code == 1 and "edited after they were applied" in refused.stderr
    assert "rebaseline" in refused.stderr
    assert "email" not in str(tables(database_url))

    accepted = run_cli("rebaseline")
    assert accepted.exit_code == 0 and first.name.split("_")[2] in accepted.stdout
    assert json.loads(run_cli("status", "--json").stdout)["ledger"]["edited"] == []
    assert run_cli("up").exit_code == 0


def test_allow_edited_runs_past_an_edit(project, database_url):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0
    first.write_text(first.read_text() + "\n# a comment added later\n")
    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))")
    assert run_cli("up", "--allow-edited").exit_code == 0


def test_a_database_migrated_before_nilemig_is_baselined_once(project, database_url):
    new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("DROP TABLE nilemig_ledger")
    assert "not created yet" in run_cli("status").stdout

    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))")
    first = run_cli("up")
    assert first.exit_code == 0 and "Recorded 1 migration(s) applied before nilemig" in first.stderr
    new_migration("add name", "op.add_column('account', sa.Column('name', sa.Text))")
    assert "Recorded" not in run_cli("up").stderr


def test_applied_revision_missing_from_the_code(project, database_url):
    path = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0
    path.unlink()
    status = run_cli("status")
    assert "Missing:" in status.stdout
    refused = run_cli("up")
    assert refused.exit_code == 1 and "no file" in refused.stderr and "Traceback" not in refused.output


def test_lock_timeout_names_the_holder(project, database_url):
    new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    holder = psycopg.connect(libpq(database_url), autocommit=True, application_name="other-deployer")
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_key(),))
        result = run_cli("up", "--lock-timeout", "1")
        assert result.exit_code == 2
        assert "other-deployer" in result.stderr and "--lock-timeout" in result.stderr
        assert current_revision(database_url) is None

        waiting = spawn(project, database_url, "up", "--lock-timeout", "30")
        # Release the lock once the runner says it waits (however slow the machine is to get there).
        announced = ""
        while "waiting up to" not in announced and waiting.poll() is None:
            announced += waiting.stderr.readline()
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_key(),))
        assert waiting.wait(timeout=60) == 0
        stderr = announced + waiting.stderr.read()
        assert "waiting up to 30 s" in stderr and "other-deployer" in stderr
    finally:
        holder.close()
    assert "account" in tables(database_url)


def test_table_lock_timeout_fails_fast_with_advice(project, database_url):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))")
    assert run_cli("up").exit_code == 0
    new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))")
    with psycopg.connect(libpq(database_url)) as blocker:
        blocker.execute("LOCK TABLE account IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_cli("up", "--table-lock-timeout", "1", "--retries", "0")
        assert time.monotonic() - started < 30
    assert result.exit_code == 1
    assert "lock timeout" in result.stderr and "--table-lock-timeout" in result.stderr
    assert current_revision(database_url) == first.name.split("_")[2]


def test_ledger_records_each_step_and_down_removes_it(project, database_url):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer))",
                          "op.drop_table('account')")
    second = new_migration("add email", "op.add_column('account', sa.Column('email', sa.Text))",
                           "op.drop_column('account', 'email')")
    assert run_cli("up").exit_code == 0

    def ledger() -> dict[str, tuple]:
        with psycopg.connect(libpq(database_url)) as conn:
            rows = conn.execute("SELECT revision, sha256, applied_by, nilemig_version, duration_ms, baseline "
                                "FROM nilemig_ledger").fetchall()
        return {r[0]: r[1:] for r in rows}

    import hashlib

    import nilemig

    recorded = ledger()
    revision = second.name.split("_")[2]
    sha, who, version, duration, baseline = recorded[revision]
    assert sha == hashlib.sha256(second.read_bytes()).hexdigest()
    assert "@" in who and version == nilemig.__version__ and duration is not None and baseline is False
    assert run_cli("down").exit_code == 0
    assert set(ledger()) == {first.name.split("_")[2]}
