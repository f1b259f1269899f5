"""`up`, `down`, `status`, `rebaseline` and `history`: moving the database along the chain."""

from __future__ import annotations

import json
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
from nilemig.runsettings import (
    LOCK_WAIT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    TABLE_LOCK_TIMEOUT_SECONDS,
    TENANT_WORKERS,
    RunSettings,
)


def _print_step(verb: str):
    def show(step) -> None:
        err.print(f"  {verb} {step.revision}  {escape(step.message)}  [dim]({step.seconds:.2f}s)[/]")

    return show


LockTimeout = Annotated[float, typer.Option(
    "--lock-timeout", metavar="SECONDS", help="How long to wait for another migration run to finish.")]
TableLockTimeout = Annotated[float, typer.Option(
    "--table-lock-timeout", metavar="SECONDS",
    help="PostgreSQL lock_timeout: give up on a table another session keeps locked.")]
StatementTimeout = Annotated[float, typer.Option(
    "--statement-timeout", metavar="SECONDS", help="PostgreSQL statement_timeout for every statement.")]
TenantWorkers = Annotated[int, typer.Option(
    "--tenant-workers", metavar="N", min=1, help="Connections a for_each_tenant step runs tenants on.")]


def _settings(lock_timeout: float, table_lock_timeout: float, statement_timeout: float, tenant_workers: int):
    return RunSettings(lock_timeout, table_lock_timeout, statement_timeout,
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
                        _settings(lock_timeout, table_lock_timeout, statement_timeout, tenant_workers))
    result = run_up(project, database, target, on_step=_print_step("applied"), options=options)
    print_findings(result.warnings, "text", stderr=True)
    _print_outcome(result, "Nothing to apply: the database is already at", "Applied")


@app.command()
@handled
def down(
    target: Annotated[str, typer.Argument(help="-N, a revision id, or base.")] = "-1",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before undoing several migrations.")] = False,
    lock_timeout: LockTimeout = LOCK_WAIT_SECONDS,
    table_lock_timeout: TableLockTimeout = TABLE_LOCK_TIMEOUT_SECONDS,
    statement_timeout: StatementTimeout = STATEMENT_TIMEOUT_SECONDS,
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
                      settings=_settings(lock_timeout, table_lock_timeout, statement_timeout, tenant_workers),
                      confirm=ask_first)
    _print_outcome(result, "Nothing to undo: the database is at", "Undid")


def _print_outcome(result, nothing: str, verb: str) -> None:
    from nilemig.core import describe_revisions

    if not result.steps:
        err.print(f"{nothing} {describe_revisions(result.after)}.")
    else:
        err.print(f"[green]{verb} {len(result.steps)} migration(s);[/] now at {describe_revisions(result.after)}.")


@app.command()
@handled
def status(
    check: Annotated[bool, typer.Option(
        "--check", help="Exit 1 when any migration is pending or a for_each_tenant step is incomplete.")] = False,
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
        if not drift.has_ledger:
            out.print("Ledger:   not created yet (the next `nilemig up` creates it)")
        for revision, path in drift.edited:
            out.print(f"[red]Edited:[/]   {revision} ({escape(display_path(path))}) changed after it was applied "
                      "— revert it, or `nilemig rebaseline` after review")
        for revision in drift.missing:
            out.print(f"[red]Missing:[/]  {revision} is applied but no migration file has it")
        for state in result.steps:
            out.print(f"[yellow]Incomplete step:[/] {escape(state.describe())} — run `nilemig up` to resume")
            for tenant, error in state.errors:
                out.print(f"  tenant {tenant}: {escape(error)}")
        if result.up_to_date:
            out.print("[green]Up to date.[/]")
        elif result.pending:
            out.print(f"Pending:  {len(result.pending)} migration(s) — run `nilemig up`")
            for m in result.pending:
                out.print(f"  {m.revision}  {escape(m.message)}  [dim]{escape(m.path)}[/]")
    if check and not result.up_to_date:
        raise typer.Exit(1)


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
def history(database_url: DatabaseUrl = None) -> None:
    """List migrations, newest first; the database's current revision is marked."""
    from nilemig.commands.status import history as run_history

    project = current_project()
    migrations = run_history(project, chosen_database(project, database_url))
    if not migrations:
        out.print("No migrations yet: create one with `nilemig new \"message\"`.")
    for m in migrations:
        mark = "[bold green]→ current[/]" if m.current else ("applied" if m.applied else "[yellow]pending[/]")
        out.print(f"{m.revision}  {escape(m.message):<40}  {mark}")
        for incomplete in m.incomplete:
            out.print(f"  [yellow]{escape(incomplete)}[/]")


