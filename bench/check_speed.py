"""Benchmark: `nilemig check` over a generated chain, against `alembic upgrade head --sql` on the same chain.

Prints the time of each (median of --repeat runs) and their ratio, measured in the same run, then the times of
`nilemig check` with its cache (.nilemig/cache/): warm (nothing changed); one file changed by a comment alone
(a comment appended to the middle file, as `# nilemig: ignore[...]` after a finding: nothing is rendered,
analysed or imported, the kept findings are filtered by the comments); one file whose SQL changed (a column
type edited in the middle migration: Alembic renders it, the rules analyse from a kept schema state to the next
one); and the time of importing Alembic and SQLAlchemy, the floor under the latter.
Goals, 1000 migrations on a 2-core machine: cold <= 2 s, warm <= 0.3 s, one file changed <= 0.5 s.

Issue 16, second round (-> after): warm 0.31-0.34 s -> ~0.23 s: unchanged files are known by their stat
signature (size, mtime, inode, ctime) recorded with their sha256 instead of being read and hashed; one
CheckCache per run (versions read and alembic.ini hashed once); the files listed and sorted as strings, not
Paths. A comment-only edit 1.63 s -> ~0.3 s (as warm plus tokenizing the changed file). A SQL edit is still
~1.6 s: Alembic links 1000 stand-ins and steps through 999 reused renders; rendering only the changed
migration's range (`down:rev`) is not done yet.

Issue 16, third round: on a straight chain, Alembic's revision map holds only the changed migrations and the
reused ones they follow (render._LineRender), and only the changed ones run. In the profile of a SQL edit
(1000 migrations, cProfile): render 1.59 s -> 0.41 s (its revision map 0.6 s and the 999 reused steps gone; the
rest is importing Alembic and SQLAlchemy). The bench's edit changes a column's type, so the schema differs up
to the end of the chain and the rules walk ~500 migrations (~0.9 s profiled): the largest part left. Not done:
cutting that walk off by what each migration's analysis reads of the schema; rewriting migrations.json whole
(~0.04 s); reading every file's text for MigrationFile.lines (~0.07 s).

Last profile and run (cProfile, -X importtime, 1000 migrations, 2-core shared machine, typer 0.29.2,
PYTHONDONTWRITEBYTECODE=1), before -> after making the check incremental:
- cold 6.86 s -> 4.89 s (`alembic upgrade head --sql`: 3.7 s). Loading the 1000 files and building the revision
  map is about a quarter, running the migrations offline a third, parsing with pglast and the rules ~1.5 s.
  Cut: json.dump (Python-level encoding) -> json.dumps for the cache's entries; one migrations.json instead of
  a file per migration; each schema table's JSON kept until `apply` changes it (32 snapshots cost ~0.1 s, not
  0.6 s). Not done: rendering in 2 worker processes. Each worker would still import every file to build the
  chain (the largest part), so only the running and parsing could be shared, on 2 cores the other engineers'
  jobs use too; and the findings would need merging in chain order. Not worth its risk here.
- warm 0.76 s -> 0.53 s. The check itself (listing and hashing the files, reading one result) ~0.1 s;
  `cache.versions()` no longer imports importlib.metadata. The rest is the interpreter and the command line:
  typer 0.29 building pydantic adapters (~0.29 s; the lead caps typer below 0.29), typer and rich (~0.1 s).
- one changed 4.12 s -> 2.31 s; the floor (`import alembic.op, alembic.context, sqlalchemy` in the same run)
  was 0.98 s, the command line another ~0.4 s. Of the ~0.85 s check itself: Alembic links the 999 unchanged
  files from stand-in modules (no import; its own Path.resolve per file and its revision map ~0.3 s), runs
  999 reused steps (its version-table statement no longer compiled for them; its construction still ~0.1 s),
  the rules' module and pglast ~0.1 s, the statement rules over ~2 x sqrt(n) migrations (from the kept state
  before the change to the next kept state after it) ~0.1 s, reading and writing the cache ~0.1 s.

Usage: python bench/check_speed.py [--migrations 1000] [--repeat 3]
No database is used.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import compiled_like_an_install, medians

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
    compiled_like_an_install()
    work = Path(tempfile.mkdtemp(prefix="nilemig-bench-check-"))
    try:
        project = work / "project"
        subprocess.run([BIN / "nilemig", "init", str(project)], check=True, stdout=subprocess.DEVNULL)
        write_chain(project / "alembic" / "versions", args.migrations)
        env = {**os.environ, "DATABASE_URL": "postgresql://bench:unused@127.0.0.1:1/none"}
        # check exits 1 when it finds errors; this chain has none, but the time counts either way.
        check_command = ([str(BIN / "nilemig"), "check"], project)
        cache = project / ".nilemig" / "cache"
        times = medians({"check": check_command,
                         "render": ([str(BIN / "alembic"), "upgrade", "head", "--sql"], project)},
                        env, args.repeat, before=lambda: shutil.rmtree(cache, ignore_errors=True), ok_codes=(0, 1))
        check, render = times["check"], times["render"]
        subprocess.run(check_command[0], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        warm = medians({"warm": check_command}, env, args.repeat, ok_codes=(0, 1))["warm"]
        middle = sorted((project / "alembic" / "versions").glob("*.py"))[args.migrations // 2]
        edits = itertools.count()

        def add_a_comment() -> None:
            with middle.open("a") as out:
                out.write(f"# edit {next(edits)}\n")

        def change_its_sql() -> None:  # a column's type: sa.Text, then sa.String(n) with another n each time
            text = re.sub(r"sa\.Text\b|sa\.String\(\d+\)", f"sa.String({100 + next(edits)})", middle.read_text(), count=1)
            middle.write_text(text)

        commented = medians({"commented": check_command}, env, args.repeat, before=add_a_comment,
                            ok_codes=(0, 1))["commented"]
        changed = medians({"changed": check_command}, env, args.repeat, before=change_its_sql,
                          ok_codes=(0, 1))["changed"]
        # What rendering even one migration costs before anything is rendered: the floor under "1 changed".
        floor = medians({"floor": ([sys.executable, "-c", "import alembic.op, alembic.context, sqlalchemy"],
                                   project)}, env, args.repeat)["floor"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.migrations} migrations, median of {args.repeat} interleaved runs")
    print(f"nilemig check (cold)         {check:6.2f} s   (goal <= 2.00 s)")
    print(f"alembic upgrade head --sql   {render:6.2f} s")
    print(f"ratio                        {check / render:6.2f}")
    print(f"nilemig check (warm)         {warm:6.2f} s   (goal <= 0.30 s)")
    print(f"check, a comment added       {commented:6.2f} s   (goal <= 0.50 s)")
    print(f"check, one migration's SQL   {changed:6.2f} s   (goal <= 0.50 s)")
    print(f"import alembic, sqlalchemy   {floor:6.2f} s   (the floor under `one migration's SQL`)")


if __name__ == "__main__":
    main()
