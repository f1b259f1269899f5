"""An incremental `check` (lint/engine.py's `_Walk`, lint/cache.py) finds exactly what a cold `--no-cache` check
finds, on long chains edited in every way that matters: a migration whose SQL changes the schema the later ones
are judged on, one whose SQL changes without changing the schema, lines shifted, a migration deleted or added,
a branch and its merge, a comment. And it analyses only what it must."""

from __future__ import annotations

from pathlib import Path

import pytest

from nilemig.config import Project
from nilemig.lint import engine
from nilemig.lint.engine import check

COUNT = 80  # several kept schema states apart (engine.snapshot_interval is at least 16)
HEADER = '"""step {n}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\nrevision = {rev!r}\ndown_revision = {down!r}\n'


def body(n: int) -> str:
    """Migrations whose findings depend on the schema the earlier ones left: a table made tenant-aware later,
    foreign keys between tenant and shared tables, rows written into tenant tables, a table created twice."""
    kind = n % 4
    if n == 60:  # the table of step 4 again: reported with the file and line that created it first
        return 'def upgrade():\n    op.create_table("s4", sa.Column("id", sa.Integer, primary_key=True))\n'
    if kind == 0:
        return (f'def upgrade():\n    op.create_table("s{n}", sa.Column("id", sa.Integer, primary_key=True),'
                f' sa.Column("name", sa.Text))\n')
    if kind == 1:
        return (f'def upgrade():\n    op.create_table(\n        "t{n}",\n'
                f'        sa.Column("id", sa.Uuid, primary_key=True),\n'
                f'        sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), primary_key=True),\n'
                f'        sa.Column("s_id", sa.Integer, sa.ForeignKey("s{n - 1}.id")),\n    )\n')
    if kind == 2:
        return f'def upgrade():\n    op.add_column("s{n - 2}", sa.Column("tenant_id", sa.Uuid))\n'
    return f"def upgrade():\n    op.execute(\"UPDATE s{n - 3} SET name = 'x'\")\n"


def rev(n: int) -> str:
    return f"{n:04d}"


def path_of(root: Path, n: int) -> Path:
    return root / "alembic" / "versions" / f"{rev(n)}_step_{n}.py"


def write(root: Path, n: int, down: str | tuple[str, ...] | None, text: str | None = None) -> Path:
    path = path_of(root, n)
    path.write_text(HEADER.format(n=n, rev=rev(n), down=down) + "\n\n" + (body(n) if text is None else text))
    return path


@pytest.fixture
def chain(project_dir: Path) -> Path:
    for n in range(COUNT):
        write(project_dir, n, rev(n - 1) if n else None)
    return project_dir


def snapshot(result: engine.CheckResult) -> list[tuple[str, str, str, Path, int]]:
    return [(f.code, f.severity, f.message, f.path, f.line) for f in result.findings]


@pytest.fixture
def analysed(monkeypatch) -> list[str]:
    """The migrations the statement rules walk through (their real paths), in order."""
    walked: list[str] = []
    real = engine._Walk._analyse

    def counting(self, path, schema):
        walked.append(path)
        return real(self, path, schema)

    monkeypatch.setattr(engine._Walk, "_analyse", counting)
    return walked


def same_as_cold(root: Path) -> list[tuple[str, str, str, Path, int]]:
    """Check with the cache, twice (the second answer comes whole from the cache), and without it: all equal."""
    incremental = check(Project(root))
    cold = check(Project(root), use_cache=False)
    assert snapshot(incremental) == snapshot(cold)
    assert incremental.migrations == cold.migrations
    assert snapshot(check(Project(root))) == snapshot(cold)
    return snapshot(cold)


def test_the_chain_has_findings_that_depend_on_earlier_migrations(chain):
    codes = {code for code, *_ in same_as_cold(chain)}
    assert len(codes) >= 3, codes
    assert any("already created by" in message for _, _, message, *_ in same_as_cold(chain))


def test_a_schema_change_in_the_middle_changes_later_findings(chain, analysed):
    before = same_as_cold(chain)
    analysed.clear()
    # Step 44 creates another table than s44: steps 45-47 work on a table that is not there, so their
    # findings change, and the schema differs from then on.
    write(chain, 44, rev(43), 'def upgrade():\n    op.create_table("other", sa.Column("id", sa.Integer, primary_key=True))\n')
    incremental = check(Project(chain))
    walked = len(analysed)
    after = snapshot(incremental)
    assert after == snapshot(check(Project(chain), use_cache=False))
    assert after != before
    # From the kept state before step 44 to the end; not the steps before that.
    assert walked <= COUNT - 44 + engine.snapshot_interval(COUNT)


def test_the_first_migration_changed(chain):
    before = same_as_cold(chain)
    write(chain, 0, None, 'def upgrade():\n    op.create_table("s4", sa.Column("id", sa.Integer, primary_key=True))\n')
    after = same_as_cold(chain)
    assert after != before


def test_shifted_lines_change_messages_that_name_them(chain):
    before = same_as_cold(chain)
    path = path_of(chain, 4)
    path.write_text(path.read_text().replace('"""step 4"""', '"""step 4\n\nwith a longer docstring\n"""'))
    after = same_as_cold(chain)
    assert after != before


def test_a_sql_change_that_leaves_the_schema_alone_is_cut_off(chain, analysed):
    same_as_cold(chain)
    analysed.clear()
    path = path_of(chain, 43)  # an UPDATE: the schema after it is the same
    path.write_text(path.read_text().replace("SET name = 'x'", "SET name = 'y'"))
    incremental = check(Project(chain))
    walked = list(analysed)
    assert snapshot(incremental) == snapshot(check(Project(chain), use_cache=False))
    assert str(path) in walked
    interval = engine.snapshot_interval(COUNT)
    assert len(walked) <= 2 * interval + 1, walked  # from a kept state before it to the next one after it


@pytest.mark.parametrize("edit", ["comment", "nothing"])
def test_a_comment_or_nothing_changed_reuses_the_rest(chain, analysed, edit):
    before = same_as_cold(chain)
    analysed.clear()
    path = path_of(chain, 50)
    if edit == "comment":
        path.write_text(path.read_text() + "# a comment\n")
    assert same_as_cold(chain) == before
    walked_with_cache = len(analysed) - COUNT  # the cold check in same_as_cold walks them all
    assert walked_with_cache <= (2 * engine.snapshot_interval(COUNT) + 1 if edit == "comment" else 0)


def test_a_deleted_migration(chain):
    same_as_cold(chain)
    path_of(chain, 30).unlink()
    write(chain, 31, rev(29))
    same_as_cold(chain)


def test_an_added_migration(chain):
    same_as_cold(chain)
    for n in range(COUNT, COUNT + 3):
        write(chain, n, rev(n - 1))
    same_as_cold(chain)
    # and one in the middle: between 20 and 21
    extra = chain / "alembic" / "versions" / "9999_inserted.py"
    extra.write_text(HEADER.format(n=9999, rev="9999", down=rev(20)) + "\n\n"
                     + 'def upgrade():\n    op.execute("DROP TABLE s20")\n')
    write(chain, 21, "9999")
    same_as_cold(chain)


def test_a_branch_and_its_merge(chain):
    same_as_cold(chain)
    # Steps 40-49 move onto a branch beside 50-59, which now start from 39; a merge joins them before 60.
    write(chain, 50, rev(39))
    write(chain, 60, (rev(49), rev(59)))
    same_as_cold(chain)
    write(chain, 45, rev(44), 'def upgrade():\n    op.drop_table("s44")\n')
    same_as_cold(chain)


def test_settings_and_a_new_cache_format_are_no_reason_for_stale_outcomes(chain):
    before = same_as_cold(chain)
    (chain / "pyproject.toml").write_text('[tool.nilemig]\nignore = ["NILE013"]\n')
    after = same_as_cold(chain)
    assert [f for f in before if f[0] != "NILE013"] == after


def test_a_corrupt_snapshot_is_not_trusted(chain):
    same_as_cold(chain)
    kept = list((chain / ".nilemig" / "cache" / "snapshots").glob("*.json"))
    assert kept
    for state in kept:  # the right key and format, but not the state the digest names
        state.write_text(state.read_text().replace('"s0"', '"s0_not"'))
    path = path_of(chain, 43)
    path.write_text(path.read_text().replace("SET name = 'x'", "SET name = 'y'"))
    same_as_cold(chain)


def test_random_edits_round_after_round(chain):
    """Seeded random edits of every kind, each round checked with the cache against a cold check."""
    import random

    rng = random.Random(16)
    alive = list(range(COUNT))  # the chain, in order
    same_as_cold(chain)
    edits = ["body", "comment", "lines", "delete", "insert"] * 2
    rng.shuffle(edits)
    for round_, edit in enumerate(edits):
        at = rng.randrange(1, len(alive) - 1)
        n = alive[at]
        path = path_of(chain, n)
        if edit == "body":  # another migration's kind of work, on tables that may or may not exist then
            write(chain, n, rev(alive[at - 1]), body(rng.randrange(4, COUNT)))
        elif edit == "comment":
            path.write_text(path.read_text() + f"# round {round_}\n")
        elif edit == "lines":
            path.write_text(path.read_text().replace('"""step', '"""\nstep', 1))
        elif edit == "delete":
            path.unlink()
            alive.pop(at)
            following = path_of(chain, alive[at])
            following.write_text(following.read_text().replace(f"down_revision = {rev(n)!r}",
                                                               f"down_revision = {rev(alive[at - 1])!r}"))
        else:
            new = COUNT + 100 + round_
            write(chain, new, rev(n), body(rng.randrange(4, COUNT)).replace('"s', '"n'))
            following = path_of(chain, alive[at + 1])
            following.write_text(following.read_text().replace(f"down_revision = {rev(n)!r}",
                                                               f"down_revision = {rev(new)!r}"))
            alive.insert(at + 1, new)
        same_as_cold(chain)


def test_ignore_comments_added_and_removed(chain, analysed):
    """Findings are kept before ignore comments: a comment-only edit analyses nothing and still equals cold."""
    before = same_as_cold(chain)
    analysed.clear()
    path = path_of(chain, 60)  # the table of step 4 created again
    code = next(code for code, _, _, found, _ in before if found == path)
    path.write_text(path.read_text().replace("primary_key=True))", f"primary_key=True))  # nilemig: ignore[{code}]"))
    incremental = snapshot(check(Project(chain)))
    assert analysed == []
    after = same_as_cold(chain)
    assert incremental == after and len(after) < len(before)
    path.write_text(f"# nilemig: ignore[{code}]\n" + path.read_text().replace(f"  # nilemig: ignore[{code}]", ""))
    after = same_as_cold(chain)  # a line added: rendered and analysed again, the file's ignore still holds
    assert all(found != path or c != code for c, _, _, found, _ in after)


@pytest.fixture
def linked(monkeypatch) -> list[str]:
    """The migration files Alembic links into its revision map (imported, or a stand-in for a reused render)."""
    from alembic.script import Script

    found: list[str] = []
    real = Script._from_path.__func__

    def noting(cls, scriptdir, path):
        found.append(str(path))
        return real(cls, scriptdir, path)

    monkeypatch.setattr(Script, "_from_path", classmethod(noting))
    return found


def replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("changed", [[43], [0], [10, 11], [5, 50, 79], [COUNT - 1]])
def test_only_the_changed_migrations_of_a_straight_chain_are_linked_and_run(chain, linked, changed):
    before = same_as_cold(chain)
    for n in changed:  # each gets another kind of work: its findings and the schema after it change
        write(chain, n, rev(n - 1) if n else None, body(n + 1).replace('"s', '"c').replace('"t', '"c'))
    linked.clear()
    incremental = check(Project(chain))
    assert sorted(linked) == sorted(str(path_of(chain, n)) for n in changed)
    assert snapshot(incremental) == snapshot(check(Project(chain), use_cache=False))
    assert snapshot(incremental) != before


def test_a_changed_migration_whose_down_revision_changed(chain, linked):
    same_as_cold(chain)
    path_of(chain, 30).unlink()
    write(chain, 31, rev(29))
    write(chain, 32, rev(31), 'def upgrade():\n    op.execute("DROP TABLE s28")\n')
    linked.clear()
    check(Project(chain))
    assert sorted(linked) == [str(path_of(chain, 31)), str(path_of(chain, 32))]
    same_as_cold(chain)


@pytest.mark.parametrize("changed", ["branch", "merge", "both"])
def test_a_changed_migration_in_a_branch_or_a_merge(chain, changed):
    write(chain, 50, rev(39))
    write(chain, 60, (rev(49), rev(59)))
    same_as_cold(chain)
    if changed in ("branch", "both"):
        write(chain, 45, rev(44), 'def upgrade():\n    op.drop_table("s44")\n')
    if changed in ("merge", "both"):
        write(chain, 60, (rev(49), rev(59)), 'def upgrade():\n    op.drop_table("s56")\n')
    same_as_cold(chain)


@pytest.mark.parametrize(("failure", "code"), [
    ('    op.get_bind().execute(sa.text("SELECT 1")).scalar()\n', "MIG000"),
    ('    raise RuntimeError("not on Nile")\n', "MIG007"),
    ("    op.execute(\n", "MIG007"),  # no longer compiles
])
def test_a_changed_migration_that_stops_rendering(chain, failure, code):
    same_as_cold(chain)
    path = path_of(chain, 44)
    replace(path, "def upgrade():\n", "def upgrade():\n" + failure)
    after = same_as_cold(chain)
    assert any(c == code and found == path for c, _, _, found, _ in after), after
    write(chain, 44, rev(43))  # and back
    same_as_cold(chain)


@pytest.mark.parametrize("after_header", [
    f"down_revision = str({rev(43)!r})\n",  # computed: the files' syntax no longer says what it follows
    f"if True:\n    down_revision = {rev(42)!r}\n",  # the syntax says 43, Alembic reads 42
    f"depends_on = {rev(10)!r}\n",
])
def test_a_changed_migration_whose_module_says_more_than_its_syntax(chain, linked, after_header):
    """The chain Alembic sees may not be the straight one read from the files: all of it is linked and run."""
    same_as_cold(chain)
    replace(path_of(chain, 44), "\n\n\ndef upgrade():", "\n" + after_header + "\n\ndef upgrade():")
    linked.clear()
    check(Project(chain))
    assert len(linked) >= COUNT
    same_as_cold(chain)


def test_what_a_changed_migration_prints_is_shown_as_without_the_cache(chain):
    same_as_cold(chain)
    replace(path_of(chain, 44), "def upgrade():\n", 'print("imported")\n\n\ndef upgrade():\n    print("ran")\n')
    incremental = check(Project(chain))
    cold = check(Project(chain), use_cache=False)
    assert incremental.printed == cold.printed and "ran" in cold.printed[0][1]
