"""for_each_tenant: per-tenant data migrations, exactly once, resumable, parallel, on a real database.

The steps here scope their SQL explicitly (`WHERE tenant_id = current_setting('nile.tenant_id')::uuid`)
so that they hold on any PostgreSQL; once the local database emulates Nile's tenant context, the
same steps written without the WHERE clause must behave the same.
"""

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
from conftest import current_revision, libpq, new_migration, run_cli, url_string

# Step SQL names no tenant: the tenant context scopes it, as on Nile (the local database emulates that).
BUMP = "UPDATE todos SET n = n + 1"
IMPORT = "from nilemig.tenants import for_each_tenant\n    "
TODOS = ("op.create_table('todos', sa.Column('tenant_id', sa.Uuid, primary_key=True), "
         "sa.Column('id', sa.Integer, primary_key=True, autoincrement=False), "
         "sa.Column('n', sa.Integer, nullable=False, server_default='0'))")


def revision_of(path: Path) -> str:
    return path.name.split("_")[2]


def step_migration(message: str, sql: str = BUMP, downgrade: str = "pass", **options: str) -> Path:
    extra = "".join(f", {key}={value!r}" for key, value in options.items())
    return new_migration(message, f"{IMPORT}for_each_tenant({message!r}, {sql!r}{extra})", downgrade)


def seed(url, tenants: int, rows: int = 3) -> list[str]:
    """`tenants` tenants with `rows` todos each, n = 0; returns the tenant ids in id order."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) SELECT gen_random_uuid(), 'tenant ' || g "
                     "FROM generate_series(1, %s) g", (tenants,))
        conn.execute("INSERT INTO todos (tenant_id, id) SELECT t.id, g FROM tenants t, generate_series(1, %s) g",
                     (rows,))
        return [str(r[0]) for r in conn.execute("SELECT id FROM tenants ORDER BY id")]


def counts(url) -> dict[int, int]:
    """How many todos have each value of n."""
    with psycopg.connect(libpq(url)) as conn:
        return dict(conn.execute("SELECT n, count(*) FROM todos GROUP BY n").fetchall())


def spawn(project: Path, url, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["DATABASE_URL"] = url_string(url)
    return subprocess.Popen([sys.executable, "-m", "nilemig", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def database_url(local_database):
    """A database set up as the local one is: under `nile.tenant_id` a query sees only that tenant's rows."""
    return local_database


@pytest.fixture
def todos(project, database_url) -> Path:
    """A project whose first migration (applied) creates `todos`."""
    path = new_migration("create todos", TODOS, "op.drop_table('todos')")
    assert run_cli("up").exit_code == 0
    return path


def test_step_runs_once_for_every_tenant_in_its_own_context(todos, database_url):
    tenants = seed(database_url, 40)
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("UPDATE tenants SET deleted = now() WHERE id = %s", (tenants[0],))
    path = step_migration("bump n")
    result = run_cli("up")
    assert result.exit_code == 0, result.output
    assert "bump n" in result.stderr and "39/39 tenants" in result.stderr
    assert counts(database_url) == {1: 39 * 3, 0: 3}  # the deleted tenant is left alone
    assert current_revision(database_url) == revision_of(path)
    with psycopg.connect(libpq(database_url)) as conn:
        done = conn.execute("SELECT count(*) FROM nilemig_step_tenants").fetchone()[0]
        completed = conn.execute("SELECT completed_at IS NOT NULL FROM nilemig_steps").fetchone()[0]
    assert done == 39 and completed
    assert run_cli("up").exit_code == 0
    assert counts(database_url) == {1: 39 * 3, 0: 3}


def test_tenants_query_narrows_and_a_callable_gets_a_connection_and_the_tenant(todos, database_url):
    tenants = seed(database_url, 6)
    chosen = tenants[:2]
    new_migration(
        "callable",
        f"{IMPORT}for_each_tenant('ten', lambda conn, tenant_id: conn.execute("
        "sa.text('UPDATE todos SET n = n + 10 WHERE tenant_id = :t AND tenant_id = "
        "current_setting(\\'nile.tenant_id\\')::uuid'), {'t': tenant_id}), "
        f"tenants=\"SELECT id FROM tenants WHERE id IN ('{chosen[0]}', '{chosen[1]}')\")",
    )
    result = run_cli("up")
    assert result.exit_code == 0, result.output
    assert counts(database_url) == {10: 6, 0: 12}


def test_a_failing_tenant_is_recorded_others_go_on_and_up_resumes_after_the_fix(todos, database_url):
    tenants = seed(database_url, 12)
    bad = tenants[5]
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("ALTER TABLE todos ADD CONSTRAINT n_small CHECK (n <= 1)")
        conn.execute("UPDATE todos SET n = 1 WHERE tenant_id = %s AND id = 2", (bad,))
    step = step_migration("bump n")
    later = new_migration("later", "op.add_column('todos', sa.Column('extra', sa.Text))")

    failed = run_cli("up")
    assert failed.exit_code == 1
    assert bad in failed.stderr and "n_small" in failed.stderr and "1 of 12 tenant(s)" in failed.stderr
    assert "nilemig up" in failed.stderr and "Traceback" not in failed.output
    assert current_revision(database_url) == revision_of(step)
    assert counts(database_url) == {1: 11 * 3 + 1, 0: 2}  # the bad tenant's work is rolled back whole

    status = run_cli("status")
    assert "Incomplete step" in status.stdout and "11/12 tenants done, 1 failed" in status.stdout
    assert bad in status.stdout
    data = json.loads(run_cli("status", "--json").stdout)
    assert data["up_to_date"] is False
    (state,) = data["steps"]
    assert (state["name"], state["done"], state["failed"], state["total"]) == ("bump n", 11, 1, 12)
    assert state["errors"][0]["tenant_id"] == bad
    assert f"step 'bump n' of {revision_of(step)} incomplete: 11/12" in run_cli("history").stdout
    assert run_cli("status", "--check").exit_code == 1

    again = run_cli("up")  # not fixed yet: still stops before the later migration
    assert again.exit_code == 1 and current_revision(database_url) == revision_of(step)

    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("UPDATE todos SET n = 0 WHERE tenant_id = %s", (bad,))
    fixed = run_cli("up")
    assert fixed.exit_code == 0, fixed.output
    assert "1 tenant(s) of 12, 11 done before" in fixed.stderr
    assert counts(database_url) == {1: 36}
    assert current_revision(database_url) == revision_of(later)
    data = json.loads(run_cli("status", "--json").stdout)
    assert data["steps"] == [] and data["up_to_date"]
    assert "incomplete" not in run_cli("history").stdout


def test_transient_lock_timeouts_are_retried(todos, database_url):
    tenants = seed(database_url, 4)
    step_migration("bump n")
    with psycopg.connect(libpq(database_url)) as blocker:
        blocker.execute("SELECT * FROM todos WHERE tenant_id = %s FOR UPDATE", (tenants[2],))
        runner = spawn(todos.parents[2], database_url, "up", "--table-lock-timeout", "0.2")
        time.sleep(1.5)
        blocker.rollback()
    assert runner.wait(timeout=60) == 0, runner.stderr.read()
    assert counts(database_url) == {1: 12}


def test_tenants_run_on_parallel_workers(todos, database_url):
    seed(database_url, 12)
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE seen (tenant_id uuid PRIMARY KEY, pid int)")
    step_migration("record pid", "INSERT INTO seen VALUES (current_setting('nile.tenant_id')::uuid, "
                   "pg_backend_pid()); SELECT pg_sleep(0.1)")
    result = run_cli("up", "--tenant-workers", "3")
    assert result.exit_code == 0, result.output
    with psycopg.connect(libpq(database_url)) as conn:
        tenants, pids = conn.execute("SELECT count(*), count(DISTINCT pid) FROM seen").fetchone()
    assert tenants == 12 and pids == 3


def test_a_second_runner_waits_on_the_lock_while_a_step_runs(todos, database_url):
    seed(database_url, 10)
    # The step waits for an advisory lock the test holds, so the first run is inside its step for sure.
    step_migration("gated bump", f"SELECT pg_advisory_xact_lock_shared(4242); {BUMP}")

    def sessions(conn) -> int:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nilemig' "
                            "AND datname = current_database()").fetchone()[0]

    def until(condition) -> None:
        for _ in range(600):
            if condition():
                return
            time.sleep(0.05)
        pytest.fail("timed out")

    with psycopg.connect(libpq(database_url), autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(4242)")
        first = spawn(todos.parents[2], database_url, "up", "--tenant-workers", "1", "--table-lock-timeout", "120")
        until(lambda: gate.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND application_name = 'nilemig'").fetchone()[0] == 1)
        running = sessions(gate)
        second = spawn(todos.parents[2], database_url, "up")
        until(lambda: sessions(gate) > running)
        time.sleep(1)
        gate.execute("SELECT pg_advisory_unlock(4242)")
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert second.wait(timeout=120) == 0
    assert "waiting" in second.stderr.read()
    assert counts(database_url) == {1: 30}


def test_a_step_in_downgrade_and_the_offline_sql(todos, database_url):
    seed(database_url, 5)
    path = step_migration("bump n", downgrade=f"{IMPORT}for_each_tenant('unbump n', "
                          f"{'UPDATE todos SET n = n - 1'!r})")
    assert run_cli("up").exit_code == 0
    assert counts(database_url) == {1: 15}
    down = run_cli("down")
    assert down.exit_code == 0, down.output
    assert counts(database_url) == {0: 15}
    assert current_revision(database_url) == revision_of(todos)

    rendered = run_cli("sql")
    assert rendered.exit_code == 0, rendered.output
    assert "-- nilemig: for_each_tenant 'bump n'" in rendered.stdout
    assert "-- SET LOCAL nile.tenant_id = '<each tenant>';" in rendered.stdout
    assert f"-- {BUMP};" in rendered.stdout
    assert "unbump n" in run_cli("sql", f"{revision_of(path)}:{revision_of(todos)}", "--down").stdout


def test_step_names_are_unique_within_a_migration(todos, database_url):
    new_migration("twice", f"{IMPORT}for_each_tenant('a', 'SELECT 1'); for_each_tenant('a', 'SELECT 2')")
    result = run_cli("up")
    assert result.exit_code == 1 and "two for_each_tenant steps named 'a'" in result.stderr
    assert current_revision(database_url) == revision_of(todos)


def test_plain_alembic_runs_steps(todos, database_url):
    seed(database_url, 3)
    step_migration("bump n")
    env = {**os.environ, "DATABASE_URL": url_string(database_url)}
    done = subprocess.run([str(Path(sys.executable).parent / "alembic"), "upgrade", "head"], check=False,
                          cwd=todos.parents[2],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert counts(database_url) == {1: 9}


def test_exactly_once_under_kill_9(project, pg_server):
    """20 `kill -9`s at random moments of a run with a step; after resuming, every row was bumped once."""
    tenants, rows = 400, 2
    new_migration("create todos", TODOS, "op.drop_table('todos')")
    step_migration("bump n", f"{BUMP}; SELECT pg_sleep(0.005)")  # a step of a second or two to land kills in
    template = pg_server.create_local_database()
    run = run_cli("up", "+1", "--database-url", url_string(template))
    assert run.exit_code == 0, run.output
    seed(template, tenants, rows)

    def fresh():
        url = template.set(database=f"k_{random.getrandbits(40):x}")
        with psycopg.connect(libpq(pg_server.admin_url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{url.database}" TEMPLATE "{template.database}" '
                         f'OWNER "{template.username}"')
        return url

    def start(url) -> tuple[subprocess.Popen, float]:
        """A run, and the moment its step had done its first tenant."""
        runner = spawn(project, url, "up", "--no-check", "--tenant-workers", "2")
        with psycopg.connect(libpq(url), autocommit=True) as conn:
            while runner.poll() is None:
                if conn.execute("SELECT to_regclass('nilemig_step_tenants') IS NOT NULL").fetchone()[0] and \
                        conn.execute("SELECT EXISTS (SELECT FROM nilemig_step_tenants)").fetchone()[0]:
                    break
                time.sleep(0.01)
        return runner, time.monotonic()

    url = fresh()
    runner, step_started = start(url)
    assert runner.wait(timeout=120) == 0, runner.stderr.read()
    step_time = time.monotonic() - step_started
    pg_server.drop_database(url)
    rng = random.Random(20261126)
    partial = 0
    try:
        for round_ in range(20):
            url = fresh()
            try:
                if round_ % 5 == 0:  # now and then before the step: in start-up or the migration itself
                    runner = spawn(project, url, "up", "--no-check", "--tenant-workers", "2")
                    time.sleep(rng.uniform(0.2, 2.0))
                else:
                    runner, _ = start(url)
                    time.sleep(rng.uniform(0, 1.0) * step_time)
                runner.send_signal(signal.SIGKILL)
                runner.wait(timeout=60)
                with psycopg.connect(libpq(url)) as conn:
                    # A COMMIT the runner sent just before the kill may still be landing on the server: wait
                    # for the runner's sessions to end, or the two counts below could see different moments.
                    deadline = time.monotonic() + 30
                    while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()").fetchone()[0] and time.monotonic() < deadline:
                        conn.rollback()
                        time.sleep(0.01)
                    conn.rollback()
                    # Each tenant's work is all there or not at all, and exactly when its progress row is.
                    assert conn.execute("SELECT count(*) FROM todos WHERE n NOT IN (0, 1)").fetchone()[0] == 0
                    mixed = conn.execute("SELECT count(*) FROM (SELECT tenant_id FROM todos GROUP BY tenant_id "
                                         "HAVING min(n) <> max(n)) m").fetchone()[0]
                    assert mixed == 0
                    bumped = conn.execute("SELECT count(DISTINCT tenant_id) FROM todos WHERE n = 1").fetchone()[0]
                    if conn.execute("SELECT to_regclass('nilemig_step_tenants') IS NOT NULL").fetchone()[0]:
                        recorded = conn.execute("SELECT count(*) FROM nilemig_step_tenants").fetchone()[0]
                    else:
                        recorded = 0
                    assert bumped == recorded
                partial += 0 < bumped < tenants
                resumed = run_cli("up", "--no-check", "--database-url", url_string(url))
                assert resumed.exit_code == 0, resumed.output
                assert counts(url) == {1: tenants * rows}
            finally:
                pg_server.drop_database(url)
    finally:
        pg_server.drop_database(template)
    assert partial >= 8, f"the kills should land inside the step ({partial} of 20 did)"


STEP_CHECK = '''
from nilemig.tenants import for_each_tenant

def upgrade():
    op.create_table("plans", sa.Column("id", sa.Uuid, primary_key=True), sa.Column("label", sa.Text))
    op.create_table("todos", sa.Column("id", sa.Uuid, primary_key=True),
                    sa.Column("tenant_id", sa.Uuid, primary_key=True), sa.Column("n", sa.Integer))
    for_each_tenant("fine", "UPDATE todos SET n = 0 WHERE n IS NULL; DELETE FROM todos WHERE n < 0")
    for_each_tenant("pinned", "UPDATE todos SET n = 1 WHERE tenant_id = '0190a1b2-0000-7000-8000-000000000001'::uuid")
    for_each_tenant("pinned insert", "INSERT INTO todos (id, tenant_id) VALUES (gen_random_uuid(), 'abc')")
    for_each_tenant("pinned list", "DELETE FROM todos WHERE tenant_id IN ('a', 'b')")
    for_each_tenant("shared", "INSERT INTO plans (id) VALUES (gen_random_uuid())")
    for_each_tenant("python", lambda conn, tenant_id: None)
    op.execute("UPDATE todos SET n = 2")
'''


def test_check_knows_steps(tmp_path):
    from lintkit import check_example

    findings = check_example(tmp_path / "p", STEP_CHECK).findings
    by_line = {(f.line, f.code) for f in findings}
    lines = STEP_CHECK.strip("\n").splitlines()
    line_of = {word: n + 9 for n, text in enumerate(lines) for word in ('"fine"', '"pinned"', '"pinned insert"',
                                                                       '"pinned list"', '"shared"', '"python"',
                                                                       "op.execute") if word in text}
    nile013 = sorted(line for line, code in by_line if code == "NILE013")
    assert nile013 == sorted(line_of[w] for w in ('"pinned"', '"pinned insert"', '"pinned list"', '"shared"'))
    assert [line for line, code in by_line if code == "NILE012"] == [line_of["op.execute"]]
    (nile012,) = [f for f in findings if f.code == "NILE012"]
    assert "for_each_tenant" in nile012.message
    assert "for_each_tenant" in run_cli("rules", "NILE012").stdout


def test_for_each_tenant_outside_a_migration_or_with_bad_arguments():
    from nilemig.errors import NilemigError
    from nilemig.tenants import for_each_tenant

    with pytest.raises(NilemigError, match="outside a migration"):
        for_each_tenant("x", "SELECT 1")
    for bad in [("", "SELECT 1"), ("x", " "), ("x", 42)]:
        with pytest.raises(NilemigError):
            for_each_tenant(*bad)
    with pytest.raises(NilemigError, match="tenants="):
        for_each_tenant("x", "SELECT 1", tenants="")


def test_verify_runs_steps_on_seeded_tenants_and_rows(project, pg_server):
    import json

    first = new_migration("create todos", TODOS, "op.drop_table('todos')")
    step_migration("bump n", downgrade=f"{IMPORT}for_each_tenant('unbump', 'SELECT 1')")

    def verify() -> list[dict]:
        result = run_cli("verify", "--scratch-url", url_string(pg_server.admin_url), "--json")
        return [f for f in json.loads(result.stdout)["failures"] if f["kind"] != "models"]

    assert verify() == []
    # Fails only when the step meets a row: the scratch database had tenants with rows.
    step_migration("divide", "UPDATE todos SET n = n / 0")
    (failure,) = verify()
    assert failure["kind"] == "upgrade" and "Step 'divide'" in failure["message"]
    assert "division by zero" in failure["message"] and "3 of 3 tenant(s)" in failure["message"]
    assert first.exists()
