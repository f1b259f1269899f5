"""Benchmark: `nilemig check` over a generated chain, against `alembic upgrade head --sql` on the same chain.

Prints the time of each (median of --repeat runs) and their ratio, measured in the same run.
Goal: `nilemig check` over 1000 migrations in <= 2 s on a 2-core machine.

Usage: python bench/check_speed.py [--migrations 1000] [--repeat 3]
No database is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import medians

BIN = Path(sys.executable).parent
SHARED = '''def upgrade():
    op.create_table("shared_{n}", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))


def downgrade():
    op.drop_table("shared_{n}")
'''
TENANT = '''def upgrade():
    op.create_table(
        "tenant_{n}",
        sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
    )
    op.create_index("tenant_{n}_title", "tenant_{n}", ["tenant_id", "title"])


def downgrade():
    op.drop_table("tenant_{n}")
'''
ALTER = '''def upgrade():
    op.add_column("shared_{m}", sa.Column("extra_{n}", sa.Text))
    op.execute("UPDATE shared_{m} SET extra_{n} = name")


def downgrade():
    op.drop_column("shared_{m}", "extra_{n}")
'''


def write_chain(versions: Path, count: int) -> None:
    down = None
    for n in range(count):
        rev = f"{n:012x}"
        body = (SHARED, TENANT, ALTER)[n % 3].format(n=n, m=n - 2)
        header = (f'"""step {n}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
                  f"revision = {rev!r}\ndown_revision = {down!r}\n\n\n")
        (versions / f"{rev}_step_{n}.py").write_text(header + body)
        down = rev


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--migrations", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nilemig-bench-check-"))
    try:
        project = work / "project"
        subprocess.run([BIN / "nilemig", "init", str(project)], check=True, stdout=subprocess.DEVNULL)
        write_chain(project / "alembic" / "versions", args.migrations)
        env = {**os.environ, "DATABASE_URL": "postgresql://bench:unused@127.0.0.1:1/none"}
        # check exits 1 when it finds errors; this chain has none, but the time counts either way.
        times = medians({"check": ([str(BIN / "nilemig"), "check"], project),
                         "render": ([str(BIN / "alembic"), "upgrade", "head", "--sql"], project)},
                        env, args.repeat, ok_codes=(0, 1))
        check, render = times["check"], times["render"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.migrations} migrations, median of {args.repeat} interleaved runs")
    print(f"nilemig check                {check:6.2f} s   (goal <= 2.00 s)")
    print(f"alembic upgrade head --sql   {render:6.2f} s")
    print(f"ratio                        {check / render:6.2f}")


if __name__ == "__main__":
    main()
