"""`nilemig up` and `nilemig down`: Alembic's upgrade and downgrade, one transaction per
migration, with failures explained (which file, which revision, where the database stays)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nilemig import ledger
from nilemig.config import url_user
from nilemig.core import (
    alembic_config,
    current_heads,
    database_state,
    describe_revisions,
    display_path,
    explain,
    explain_errors,
    failing_frame,
    foreign_env_py,
    has_autocommit_block,
    pending_scripts,
    script_directory,
)
from nilemig.database import TRANSIENT_FAILURES, failure_reason, sqlstate
from nilemig.errors import (
    EXIT_INTERRUPTED,
    AnswerIsNo,
    NilemigError,
    UsageError,
    sentence,
)
from nilemig.keys import FINAL_HEADS_KEY, PREFLIGHT_KEY, SETTINGS_KEY
from nilemig.ledger import missing_privilege
from nilemig.runsettings import RunSettings

if TYPE_CHECKING:
    from alembic.script import Script, ScriptDirectory

    from nilemig.config import Database, Project
    from nilemig.ledger import Drift

DUPLICATE_TABLE = "42P07"
QUERY_CANCELED = "57014"


@dataclass
class Step:
    revision: str
    message: str
    seconds: float | None  # None when the project's own env.py ran it: nilemig could not time it


@dataclass
class RunResult:
    after: tuple[str, ...]
    steps: list[Step] = field(default_factory=list)
    warnings: list = field(default_factory=list)  # nilemig check's warnings on the migrations applied


@dataclass
class UpOptions:
    allow_destructive: bool = False  # apply unreviewed `# nilemig: destructive` operations
    allow_edited: bool = False  # run although applied migrations were edited since
    check: bool = True  # run nilemig check on the pending migrations first
    settings: RunSettings | None = None  # lock wait and timeouts


class Interrupted(NilemigError):
    exit_code = EXIT_INTERRUPTED


UP_TARGETS = "head, +N (N of 1 or more), or a revision id (or its first four or more characters)"
DOWN_TARGETS = "-N (N of 1 or more), a revision id (or its first four or more characters), or base"


def up(project: Project, database: Database, target: str = "head",
       on_step: Callable[[Step], None] | None = None, options: UpOptions | None = None) -> RunResult:
    options = options or UpOptions()
    scripts = script_directory(project, alembic_config(project))
    if target.startswith(("+", "-")) and not re.fullmatch(r"\+\d+", target):
        raise bad_target("up", target, UP_TARGETS, NilemigError(f"{target!r} is not a number of steps up."))
    warnings: list = []

    def preflight(state: ledger.State) -> bool:
        """Refuse drift, unreviewed destructive operations and check errors; whether anything is pending."""
        refuse_drift(ledger.drift(state, scripts), options.allow_edited)
        try:
            pending = pending_scripts(scripts, state.current, target)
        except NilemigError as exc:
            raise bad_target("up", target, UP_TARGETS, exc) from None
        if not options.allow_destructive:
            refuse_unreviewed_destructive(pending)
        warnings.extend(refuse_check_errors(project, pending) if options.check and pending else [])
        return bool(pending)

    result = _run(project, database, scripts, "upgrade", target, on_step, options.settings, preflight)
    result.warnings = warnings
    return result


def down(project: Project, database: Database, target: str = "-1",
         on_step: Callable[[Step], None] | None = None, settings: RunSettings | None = None,
         confirm: Callable[[int], None] | None = None) -> RunResult:
    """Undo migrations; `confirm` gets how many would be undone first, and may raise to stop."""
    scripts = script_directory(project, alembic_config(project))
    relative = re.fullmatch(r"-(\d+)", target)
    if relative:
        # How many is known without the database (`down` is `down -1`): all is read under the lock, on the
        # connection that migrates, one connection (a dozen round trips on a remote Nile) fewer.
        steps = int(relative[1])
    else:
        # Read before the run, and asked before the lock is taken: a question must not keep other runners waiting.
        state, drift = database_state(database, scripts)
        refuse_drift(drift, allow_edited=True)
        try:
            steps = _steps_down(project, scripts, state.current, target)
        except NilemigError as exc:
            raise bad_target("down", target, DOWN_TARGETS, exc) from None
    if confirm is not None:
        confirm(steps)

    def preflight(locked: ledger.State) -> bool:
        refuse_drift(ledger.drift(locked, scripts), allow_edited=True)
        return bool(locked.current)

    return _run(project, database, scripts, "downgrade", target, on_step, settings, preflight)


def bad_target(command: str, target: str, forms: str, exc: NilemigError) -> UsageError:
    return UsageError(f"`nilemig {command} {target}` names no migration it can go to: {sentence(exc.message)} "
                      f"{command} takes {forms}; `nilemig history` lists the revisions. Nothing was changed.")


def refuse_drift(drift: Drift, allow_edited: bool) -> None:
    if drift.missing:
        raise AnswerIsNo(
            f"The database has applied migration(s) {', '.join(drift.missing)} that no file in the versions "
            "directory has (deleted, renamed, or from another branch). Restore the file(s), e.g. from git, "
            "then run again; `nilemig status` shows the state. Nothing was changed."
        )
    if drift.edited and not allow_edited:
        listed = ", ".join(f"{display_path(path)} ({revision})" for revision, path in drift.edited)
        raise AnswerIsNo(
            f"Not applying: {len(drift.edited)} migration(s) were edited after they were applied here: {listed}. "
            "The database ran the old version, so the edit will never run on it. Revert the edit and put the "
            "change in a new migration; or, after review, accept the files as they are with "
            "`nilemig rebaseline`, or run `nilemig up --allow-edited`. Nothing was applied."
        )


def refuse_check_errors(project: Project, pending: list[Script]) -> list:
    """Run `nilemig check` on the migrations about to be applied; stop on errors, return warnings."""
    from pathlib import Path

    from nilemig.lint.engine import check

    result = check(project, only={Path(s.path) for s in pending})
    if result.errors:
        listed = "; ".join(f"{display_path(f.path)}:{f.line} {f.code} {f.message}" for f in result.errors)
        raise AnswerIsNo(
            f"Not applying: nilemig check found {len(result.errors)} error(s) in the pending migrations: {listed}. "
            "Fix them (`nilemig rules CODE` explains each), mark a deliberate one with "
            "`# nilemig: ignore[CODE]`, or run `nilemig up --no-check`. Nothing was applied."
        )
    return result.warnings


def refuse_unreviewed_destructive(pending: list[Script]) -> None:
    from nilemig.autogen import unacknowledged_markers

    found = [f"{display_path(s.path)}:{line} {reason}" for s in pending for line, reason in unacknowledged_markers(s.path)]
    if found:
        raise AnswerIsNo(
            f"Not applying: {len(found)} destructive operation(s) not reviewed yet: " + "; ".join(found) + ". "
            'Review each, then change its "# nilemig: destructive" comment to "# nilemig: destructive-ok" '
            "(or delete the comment), or run `nilemig up --allow-destructive`. Nothing was applied."
        )


def _steps_down(project: Project, scripts: ScriptDirectory, current: tuple[str, ...], target: str) -> int:
    """How many migrations `down TARGET` (a revision or base) would undo (a target down cannot go to raises)."""
    if target.startswith(("+", "-")):
        raise NilemigError(f"{target!r} is not a number of steps down.")
    with explain_errors(project):
        return len(list(scripts.iterate_revisions(current, target))) if current else 0


def _run(project: Project, database: Database, scripts: ScriptDirectory, direction: str, target: str,
         on_step: Callable[[Step], None] | None, settings: RunSettings | None,
         preflight: Callable[[ledger.State], bool]) -> RunResult:
    """Run Alembic's upgrade or downgrade (`direction`) to `target` with the scripts already loaded.

    `preflight` gets the database's state, read on the connection that migrates under the migration lock
    (nilemig's env.py calls it), and refuses by raising or says whether there is anything to run.
    """
    from alembic.runtime.environment import EnvironmentContext

    steps: list[Step] = []
    started = [time.monotonic()]

    def record(ctx, step, heads, run_args) -> None:
        now = time.monotonic()
        done = Step(step.up_revision_id, step.up_revision.doc or "", now - started[0])
        started[0] = now
        steps.append(done)
        if on_step is not None:
            on_step(done)

    config = alembic_config(project, database, on_version_apply=record)
    if settings is not None:
        config.attributes[SETTINGS_KEY] = settings
    before: tuple[str, ...] = ()
    if foreign_env_py(project, scripts) is None:
        config.attributes[PREFLIGHT_KEY] = preflight
    else:
        # The project's own env.py knows no pre-flight: read the state on a connection of its own first.
        state, _ = database_state(database, scripts)
        before = state.current
        if not preflight(state):
            return RunResult(before, steps)

    # What alembic.command.upgrade/downgrade hand to env.py, without loading every script again; named
    # as Alembic names them, which is how env.py (tenants.StepRunner.resume) tells the direction.
    def upgrade(current: Any, context: Any) -> Any:
        return scripts._upgrade_revs(target, current)

    def downgrade(current: Any, context: Any) -> Any:
        return scripts._downgrade_revs(target, current)

    try:
        with EnvironmentContext(config, scripts, fn=upgrade if direction == "upgrade" else downgrade, as_sql=False,
                                destination_rev=target):
            scripts.run_env()
    except NilemigError:
        raise
    except KeyboardInterrupt:
        now_at = describe_revisions(current_heads(database), scripts)
        raise Interrupted(
            f"Interrupted. The migration that was running was rolled back; the database is at {now_at}"
            f"{f', after {len(steps)} migration(s) completed' if steps else ''}."
        ) from None
    except Exception as exc:
        # Alembic loads every migration file before it runs any: a broken file stops it before
        # anything ran. What fails inside upgrade()/downgrade(), or in the database, is a failed migration.
        frame = failing_frame(exc, project.root)
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError) or (frame is not None and frame.name in ("upgrade", "downgrade")):
            raise migration_failed(exc, project, database, scripts, steps) from None
        raise explain(exc, project) or exc from None
    if FINAL_HEADS_KEY in config.attributes:
        return RunResult(config.attributes[FINAL_HEADS_KEY], steps)
    # An env.py that is not nilemig's reports nothing back: read where it left the database.
    after = current_heads(database)
    steps = steps_between(scripts, before, after)
    for step in steps if on_step is not None else ():
        on_step(step)
    return RunResult(after, steps)


def steps_between(scripts: ScriptDirectory, before: tuple[str, ...], after: tuple[str, ...]) -> list[Step]:
    """The migrations a run moved through, in the order it ran them (durations unknown)."""
    if set(before) == set(after):
        return []
    at_or_below_before = {s.revision for s in scripts.iterate_revisions(before, "base")} if before else set()
    upgraded = not set(after) <= at_or_below_before
    upper, lower = (after, before) if upgraded else (before, after)
    moved = list(scripts.iterate_revisions(upper, lower or "base"))
    return [Step(s.revision, s.doc or "", None) for s in (reversed(moved) if upgraded else moved)]


def migration_failed(exc: Exception, project: Project, database: Database,
                     scripts: ScriptDirectory, done: list[Step]) -> NilemigError:
    """One paragraph: which migration failed, why, and where the database stays."""
    frame = failing_frame(exc, project.root)
    script = _script_at(scripts, frame.filename) if frame else None
    denied = None if script is not None else missing_privilege(exc, url_user(database.url))
    if denied is not None:  # on nilemig's or Alembic's own tables, before any migration ran
        return denied
    reason = failure_reason(exc)
    if script is not None:
        where = f"Migration {script.revision} ({script.doc}) failed at {display_path(script.path)}, line {frame.lineno}"
    elif frame is not None:
        where = f"A migration failed at {display_path(frame.filename)}, line {frame.lineno}"
    else:
        where = "A migration failed"
    advice = ""
    code = sqlstate(exc)
    if code == DUPLICATE_TABLE:
        advice = _duplicate_table_advice(scripts, reason) + " "
    elif code in TRANSIENT_FAILURES and script is not None and has_autocommit_block(script):
        advice = (f"Another session got in its way (it {TRANSIENT_FAILURES[code]}). nilemig does not retry a "
                  "migration with an autocommit_block: what ran in that block is committed already. Run again "
                  "when that work is done, or raise --table-lock-timeout. ")
    elif code in TRANSIENT_FAILURES:
        advice = (f"Another session got in its way (it {TRANSIENT_FAILURES[code]}) on every attempt (--retries). "
                  "Run again when that work is done, or raise --table-lock-timeout or --retries. ")
    elif code == QUERY_CANCELED:
        advice = ("A statement ran longer than the statement timeout: raise --statement-timeout, or split the "
                  "migration. ")
    try:
        after = describe_revisions(current_heads(database), scripts)
    except NilemigError:
        after = "the revision it had before this migration (the connection was lost before it could be checked)"
    applied = f" {len(done)} migration(s) before it were applied." if done else ""
    return AnswerIsNo(
        f"{where}: {reason}. {advice}That migration was rolled back; the database is at {after}.{applied}"
    )


def _script_at(scripts: ScriptDirectory, filename: str) -> Script | None:
    from pathlib import Path

    target = Path(filename).resolve()
    return next((s for s in scripts.walk_revisions() if Path(s.path).resolve() == target), None)


def _duplicate_table_advice(scripts: ScriptDirectory, reason: str) -> str:
    match = re.search(r'relation "([^"]+)" already exists', reason)
    if not match:
        return ""
    table = match[1]
    files = files_creating_table(scripts, table)
    if len(files) < 2:
        return (f"Table {table!r} already exists in the database but was not created by a migration here: "
                "drop it by hand or remove the create_table from this migration.")
    listed = ", ".join(display_path(s.path) for s in files)
    return (f"Table {table!r} is created by more than one migration: {listed}. "
            "Delete or rename the later one, or make it alter the table instead.")


def files_creating_table(scripts: ScriptDirectory, table: str) -> list[Script]:
    """Migrations whose source creates `table`, oldest first (a text search of the files)."""
    name = re.escape(table)
    pattern = re.compile(
        rf"""create_table\(\s*["']{name}["']|CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:"?public"?\.)?"?{name}"?[\s(]""",
        re.IGNORECASE,
    )
    found = [s for s in scripts.walk_revisions() if pattern.search(open(s.path, encoding="utf-8").read())]
    return list(reversed(found))
