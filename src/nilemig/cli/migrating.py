"""`up`, `down`, `stamp`, `status`, `rebaseline` and `history`: moving the database along the chain."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Optional

import typer

from nilemig.cli.app import (
    DatabaseUrl,
    announce_no_check,
    app,
    chosen_database,
    confirm,
    current_project,
    handled,
)
from nilemig.cli.output import err, escape, out, print_findings, step_progress
from nilemig.errors import EXIT_ANSWER_IS_NO
from nilemig.runsettings import (
    LOCK_WAIT_SECONDS,
    RETRIES,
    STATEMENT_TIMEOUT_SECONDS,
    TABLE_LOCK_TIMEOUT_SECONDS,
    TENANT_WORKERS,
    RunSettings,
)


def _print_step(verb: str):
    def show(step) -> None:
        took = f"  [dim]({step.seconds:.2f}s)[/]" if step.seconds is not None else ""
        err.print(f"  {verb} {step.revision}  {escape(step.message)}{took}")

    return show


def _seconds(allow_zero: bool):
    least = "0 or more" if allow_zero else "more than 0"

    def check(value: float) -> float:
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise typer.BadParameter(f"{value:g} seconds: it must be {least}.")
        return value

    return check


LockTimeout = Annotated[float, typer.Option(
    "--lock-timeout", metavar="SECONDS", callback=_seconds(allow_zero=True),
    help="How long to wait for another migration run to finish (0: do not wait).")]
TableLockTimeout = Annotated[float, typer.Option(
    "--table-lock-timeout", metavar="SECONDS", callback=_seconds(allow_zero=False),
    help="PostgreSQL lock_timeout: give up on a table another session keeps locked (then retry).")]
StatementTimeout = Annotated[float, typer.Option(
    "--statement-timeout", metavar="SECONDS", callback=_seconds(allow_zero=False),
    help="PostgreSQL statement_timeout for every statement.")]
Retries = Annotated[int, typer.Option(
    "--retries", min=0, metavar="N",
    help="Roll back and run again a migration that lost a lock race or a deadlock, up to N times, with "
         "exponential backoff (never one with an autocommit_block; 0: never).")]
TenantWorkers = Annotated[int, typer.Option(
    "--tenant-workers", metavar="N", min=1, help="Connections a for_each_tenant step runs tenants on.")]


def _steps_back(target: str) -> str:
    if target.startswith("-") and not re.fullmatch(r"-\d+", target):
        raise typer.BadParameter(f"no such option {target!r}; a target is -N, a revision id, or base.")
    return target


def _settings(lock_timeout: float, table_lock_timeout: float, statement_timeout: float, retries: int,
              tenant_workers: int = TENANT_WORKERS):
    return RunSettings(lock_timeout, table_lock_timeout, statement_timeout, retries,
                       on_notice=lambda message: err.print(escape(message)), tenant_workers=tenant_workers,
                       step_progress=step_progress if err.is_terminal else None)


@app.command()
@handled
def up(
    target: Annotated[str, typer.Argument(help="head, +N, or a revision id.")] = "head",
    allow_destructive: Annotated[bool, typer.Option(
        "--allow-destructive", help="Apply migrations whose destructive operations nobody has reviewed.")] = False,
    allow_edited: Annotated[bool, typer.Option(
        "--allow-edited", help="Run although applied migrations were edited since.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip nilemig check on the pending migrations.")] = False,
    lock_timeout: LockTimeout = LOCK_WAIT_SECONDS,
    table_lock_timeout: TableLockTimeout = TABLE_LOCK_TIMEOUT_SECONDS,
    statement_timeout: StatementTimeout = STATEMENT_TIMEOUT_SECONDS,
    retries: Retries = RETRIES,
    tenant_workers: TenantWorkers = TENANT_WORKERS,
    database_url: DatabaseUrl = None,
) -> None:
    """Apply pending migrations, each in its own transaction, after checking them; finish incomplete steps first."""
    from nilemig.commands.migrate import UpOptions
    from nilemig.commands.migrate import up as run_up

    project = current_project()
    database = chosen_database(project, database_url)
    announce_no_check(no_check)
    options = UpOptions(allow_destructive, allow_edited, not no_check,
                        _settings(lock_timeout, table_lock_timeout, statement_timeout, retries, tenant_workers))
    result = run_up(project, database, target, on_step=_print_step("applied"), options=options)
    print_findings(result.warnings, "text", stderr=True)
    _print_outcome(result, "Nothing to apply: the database is already at", "Applied")


# `down -2`: Click would read -2 as an option; this lets an unknown option through as the target, and
# `_steps_back` turns one that is not -N back into a usage error.
@app.command(context_settings={"ignore_unknown_options": True})
@handled
def down(
    target: Annotated[str, typer.Argument(help="-N, a revision id, or base.", callback=_steps_back)] = "-1",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before undoing several migrations.")] = False,
    lock_timeout: LockTimeout = LOCK_WAIT_SECONDS,
    table_lock_timeout: TableLockTimeout = TABLE_LOCK_TIMEOUT_SECONDS,
    statement_timeout: StatementTimeout = STATEMENT_TIMEOUT_SECONDS,
    retries: Retries = RETRIES,
    tenant_workers: TenantWorkers = TENANT_WORKERS,
    database_url: DatabaseUrl = None,
) -> None:
    """Undo migrations: one by default; more, or to base, only after confirmation."""
    from nilemig.commands.migrate import down as run_down

    def ask_first(count: int) -> None:
        if (count > 1 or target == "base") and not yes:
            confirm(f"Undo {count} migration(s)? Data in the tables they created may be lost.",
                     f"`down {target}` would undo {count} migration(s) and may destroy data.")

    project = current_project()
    result = run_down(project, chosen_database(project, database_url), target, on_step=_print_step("undone "),
                      settings=_settings(lock_timeout, table_lock_timeout, statement_timeout, retries,
                                         tenant_workers), confirm=ask_first)
    _print_outcome(result, "Nothing to undo: the database is at", "Undid")


def _print_outcome(result, nothing: str, verb: str) -> None:
    from nilemig.core import describe_revisions

    if not result.steps:
        err.print(f"{nothing} {describe_revisions(result.after)}.")
    else:
        err.print(f"[green]{verb} {len(result.steps)} migration(s);[/] now at {describe_revisions(result.after)}.")


@app.command()
@handled
def stamp(
    revision: Annotated[str, typer.Argument(help="head, base, or a revision id.")],
    lock_timeout: LockTimeout = LOCK_WAIT_SECONDS,
    database_url: DatabaseUrl = None,
) -> None:
    """Mark the database as being at REVISION without running any migration."""
    from nilemig.commands.stamp import stamp as run_stamp
    from nilemig.core import describe_revisions

    project = current_project()
    result = run_stamp(project, chosen_database(project, database_url), revision,
                       _settings(lock_timeout, TABLE_LOCK_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS, retries=0))
    verb = "marked applied (not run)" if result.upward else "no longer marked applied (nothing undone)"
    for step in result.moved:
        err.print(f"  {verb}  {step.revision}  {escape(step.message)}")
    err.print(f"[green]Stamped;[/] now at {describe_revisions(result.after)}. No migration ran.")


@app.command()
@handled
def status(
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 1 when any migration is pending, an applied one has no file, or a "
                        "for_each_tenant step is incomplete.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the database, its current revision, the head, and pending migrations."""
    from nilemig.commands.status import status as run_status
    from nilemig.core import describe_revisions, display_path

    project = current_project()
    result = run_status(project, chosen_database(project, database_url))
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        out.print(f"Current:  {describe_revisions(result.current)}")
        out.print(f"Head:     {', '.join(result.heads) or '(no migrations yet)'}")
        drift = result.drift
        if not result.ledger_kept:
            out.print("Ledger:   not kept (alembic/env.py is not nilemig's; see `nilemig init --adopt`)")
        elif not drift.has_ledger:
            out.print("Ledger:   not created yet (the next `nilemig up` creates it)")
        for revision, path in drift.edited:
            out.print(f"[red]Edited:[/]   {revision} ({escape(display_path(path))}) changed after it was applied "
                      "— revert it, or `nilemig rebaseline` after review")
        for revision in drift.missing:
            out.print(f"[red]Missing:[/]  {revision} is applied but no migration file has it")
        for revision in drift.stamped:
            out.print(f"[yellow]Stamped:[/]  {revision} is marked applied by a stamp; it never ran here")
        for state in result.steps:
            out.print(f"[yellow]Incomplete step:[/] {escape(state.describe())} — run `nilemig up` to resume")
            for tenant, error in state.errors:
                out.print(f"  tenant {tenant}: {escape(error)}")
        if result.up_to_date:
            out.print("[green]Up to date.[/]")
        elif drift.missing:
            out.print("[red]Not up to date:[/] restore the missing migration file(s), e.g. from git; until then "
                      "`nilemig up` and `down` refuse to run")
        elif result.pending:
            out.print(f"Pending:  {len(result.pending)} migration(s) — run `nilemig up`")
            for m in result.pending:
                out.print(f"  {m.revision}  {escape(m.message)}  [dim]{escape(m.path)}[/]")
    if check and not result.up_to_date:
        raise typer.Exit(EXIT_ANSWER_IS_NO)


@app.command()
@handled
def rebaseline(
    revisions: Annotated[Optional[list[str]], typer.Argument(help="Revisions to accept (default: every edited one).",
                                                              show_default=False)] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """After reviewing edits to applied migrations, accept their files as they are now."""
    from nilemig.commands.status import rebaseline as run_rebaseline

    project = current_project()
    accepted = run_rebaseline(project, chosen_database(project, database_url), revisions or [])
    out.print(f"Accepted {', '.join(accepted)} as reviewed." if accepted else "No edited migrations to accept.")


@app.command()
@handled
def history(
    database_url: DatabaseUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List migrations, newest first; the database's current revision is marked."""
    from nilemig.commands.status import history as run_history

    project = current_project()
    migrations = run_history(project, chosen_database(project, database_url))
    if as_json:
        out.print_json(json.dumps({"migrations": [m.to_json() for m in migrations]}))
        return
    if not migrations:
        out.print("No migrations yet: create one with `nilemig new \"message\"`.")
    for m in migrations:
        mark = m.how if m.applied else "[yellow]pending[/]"
        if m.current:
            mark = f"[bold green]→ current[/] ({mark})"
        out.print(f"{m.revision}  {escape(m.message):<40}  {mark}")
        for incomplete in m.incomplete:
            out.print(f"  [yellow]{escape(incomplete)}[/]")


