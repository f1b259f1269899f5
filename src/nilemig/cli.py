"""The `nilemig` command line: parses arguments and prints. The work lives in
`nilemig.commands`, imported inside each command so `nilemig --help` stays fast
(no SQLAlchemy, Alembic or psycopg until a command needs them)."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from nilemig import __version__
from nilemig.config import (
    LOCK_WAIT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    TABLE_LOCK_TIMEOUT_SECONDS,
)
from nilemig.errors import NilemigError, UsageError, redact

app = typer.Typer(
    help="Safe, Nile-aware database migrations on top of Alembic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: rendering it with rich would double `nilemig --help`'s start-up time.
    rich_markup_mode=None,
)
local_app = typer.Typer(help="The local development database (used when no DATABASE_URL is set).",
                        no_args_is_help=True)
app.add_typer(local_app, name="local")


class _LazyConsole:
    """A rich Console made on first use: importing rich costs `nilemig --help` a fifth of its time."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)
_state = {"debug": False}

DatabaseUrl = Annotated[
    Optional[str],
    typer.Option("--database-url", help="Database URL; overrides DATABASE_URL from the environment and .env.",
                 show_default=False),
]


def handled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Show a NilemigError as one paragraph and exit non-zero; anything else likewise, redacted."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except NilemigError as exc:
            _show_trace(exc)
            err.print(f"[bold red]Error:[/] {escape(str(exc))}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]Interrupted.[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            _show_trace(exc)
            err.print(
                f"[bold red]Error:[/] {escape(redact(f'{type(exc).__name__}: {exc}'))}. "
                "This is unexpected; run again with --debug for details and report it."
            )
            raise typer.Exit(1) from None

    return wrapper


def _show_trace(exc: BaseException) -> None:
    if _state["debug"]:
        err.print(escape(redact("".join(traceback.format_exception(exc)))), end="")


def _version(value: bool) -> None:
    if value:
        out.print(f"nilemig {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (passwords still masked).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    _state["debug"] = debug


def _project():
    from nilemig.config import find_project

    return find_project()


def _database(project, database_url: str | None):
    from nilemig.config import resolve_database

    database = resolve_database(project, database_url)
    err.print(escape(database.describe()))
    return database


@app.command()
@handled
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the project.")] = Path("."),
    example: Annotated[bool, typer.Option("--example", help="Add Nile's walkthrough: the account migration "
                                          "and Todo models.")] = False,
) -> None:
    """Create a Nile-ready Alembic project: alembic.ini, alembic/env.py, models.py, .env.example."""
    from nilemig.commands.init import init as run_init
    from nilemig.core import display_path

    result = run_init(directory, example=example)
    for path in result.created:
        out.print(f"created  {display_path(path)}")
    for path in result.existing:
        out.print(f"exists   {display_path(path)} (left as it is)")
    if result.gitignore_added:
        out.print(f"updated  {display_path(result.root / '.gitignore')} (+ {', '.join(result.gitignore_added)})")
    if result.foreign_env_py:
        err.print("[yellow]alembic/env.py is not nilemig's:[/] nilemig will run it as it is, so it chooses the "
                  "database and filters itself. To get nilemig's handling, make its body "
                  "`from nilemig.alembic_env import run_migrations; run_migrations(context, target_metadata)`.")
    if not result.created:
        out.print("Nothing to do: the project is already initialised.")
        return
    steps = [] if result.root == Path.cwd() else [f"cd {display_path(result.root)}"]
    steps.append("copy .env.example to .env and set DATABASE_URL (or skip this to use the local development "
                 "database)")
    steps.append("nilemig up" if example else 'nilemig new "create account table", fill it in, then nilemig up')
    out.print("\nNext: " + "; ".join(steps) + ".")


@app.command()
@handled
def new(message: Annotated[str, typer.Argument(help="What the migration does.")]) -> None:
    """Write a new, empty migration to fill in; prints its path."""
    from nilemig.commands.new import new as run_new
    from nilemig.core import display_path

    out.print(display_path(run_new(_project(), message)))


@app.command()
@handled
def autogen(
    message: Annotated[str, typer.Argument(help="What the migration does.")],
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip nilemig check on the new migration.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Write a migration from the difference between models.py and the database; never touches Nile's built-ins."""
    from nilemig.commands.autogen import autogen as run_autogen
    from nilemig.core import display_path

    project = _project()
    database = _database(project, database_url)
    _announce_no_check(no_check)
    result = run_autogen(project, database, message, check=not no_check)
    if result.path is None:
        err.print("No changes: the models match the database. No migration written.")
        return
    out.print(display_path(result.path))
    _print_findings(result.findings, "text", stderr=True)
    if result.destructive:
        err.print(f"[bold red]{len(result.destructive)} destructive operation(s), marked in the file:[/]")
        for line, reason in result.destructive:
            err.print(f"[red]  line {line}: {escape(reason)}[/]")
        err.print('Review each; then change its "# nilemig: destructive" comment to "# nilemig: destructive-ok" '
                  "(or delete it). Until then `nilemig up` refuses to apply it.")
    errors = [f for f in result.findings if f.severity == "error"]
    if errors:
        raise NilemigError(f"The new migration {display_path(result.path)} breaks {len(errors)} of Nile's rules "
                           "(listed above); `nilemig up` will refuse it. Fix the models and generate it again, "
                           "or edit the file.")


@app.command()
@handled
def diff(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show what autogenerate would write, without writing it; exit 1 when models and database differ."""
    from nilemig.commands.autogen import diff as run_diff

    project = _project()
    differences = run_diff(project, _database(project, database_url))
    if as_json:
        out.print_json(json.dumps({"differences": [d.to_json() for d in differences]}))
    elif not differences:
        out.print("[green]No differences:[/] the models match the database.")
    else:
        out.print(f"{len(differences)} difference(s) between the models and the database:")
        for d in differences:
            style = "red" if d.destructive else "default"
            out.print(f"[{style}]{escape(d.code)}[/]" + (f"  [red]# destructive: {escape(d.destructive)}[/]"
                                                       if d.destructive else ""))
    if differences:
        raise typer.Exit(1)


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


def _settings(lock_timeout: float, table_lock_timeout: float, statement_timeout: float):
    from nilemig.alembic_env import RunSettings

    return RunSettings(lock_timeout, table_lock_timeout, statement_timeout,
                       on_notice=lambda message: err.print(escape(message)))


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
    database_url: DatabaseUrl = None,
) -> None:
    """Apply pending migrations, each in its own transaction, after checking them."""
    from nilemig.commands.migrate import UpOptions
    from nilemig.commands.migrate import up as run_up

    project = _project()
    database = _database(project, database_url)
    _announce_no_check(no_check)
    options = UpOptions(allow_destructive, allow_edited, not no_check,
                        _settings(lock_timeout, table_lock_timeout, statement_timeout))
    result = run_up(project, database, target, on_step=_print_step("applied"), options=options)
    _print_findings(result.warnings, "text", stderr=True)
    _print_outcome(result, "Nothing to apply: the database is already at", "Applied")


@app.command()
@handled
def down(
    target: Annotated[str, typer.Argument(help="-N, a revision id, or base.")] = "-1",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before undoing several migrations.")] = False,
    lock_timeout: LockTimeout = LOCK_WAIT_SECONDS,
    table_lock_timeout: TableLockTimeout = TABLE_LOCK_TIMEOUT_SECONDS,
    statement_timeout: StatementTimeout = STATEMENT_TIMEOUT_SECONDS,
    database_url: DatabaseUrl = None,
) -> None:
    """Undo migrations: one by default; more, or to base, only after confirmation."""
    from nilemig.commands.migrate import down as run_down

    def ask_first(count: int) -> None:
        if (count > 1 or target == "base") and not yes:
            _confirm(f"Undo {count} migration(s)? Data in the tables they created may be lost.",
                     f"`down {target}` would undo {count} migration(s) and may destroy data.")

    project = _project()
    result = run_down(project, _database(project, database_url), target, on_step=_print_step("undone "),
                      settings=_settings(lock_timeout, table_lock_timeout, statement_timeout), confirm=ask_first)
    _print_outcome(result, "Nothing to undo: the database is at", "Undid")


def _announce_no_check(no_check: bool) -> None:
    if no_check:
        err.print("[yellow]Skipping nilemig check (--no-check).[/]")


def _confirm(question: str, refusal: str) -> None:
    """Ask on a terminal; without one, refuse and point at --yes."""
    if not sys.stdin.isatty():
        raise UsageError(f"{refusal} There is no terminal to ask for confirmation: pass --yes to go ahead.")
    typer.confirm(question, abort=True)


def _print_outcome(result, nothing: str, verb: str) -> None:
    from nilemig.core import describe_revisions

    if not result.steps:
        err.print(f"{nothing} {describe_revisions(result.after)}.")
    else:
        err.print(f"[green]{verb} {len(result.steps)} migration(s);[/] now at {describe_revisions(result.after)}.")


@app.command()
@handled
def status(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when any migration is pending.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show the database, its current revision, the head, and pending migrations."""
    from nilemig.commands.status import status as run_status
    from nilemig.core import describe_revisions, display_path

    project = _project()
    result = run_status(project, _database(project, database_url))
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
        if result.up_to_date:
            out.print("[green]Up to date.[/]")
        else:
            out.print(f"Pending:  {len(result.pending)} migration(s) — run `nilemig up`")
            for m in result.pending:
                out.print(f"  {m.revision}  {escape(m.message)}  [dim]{escape(m.path)}[/]")
    if check and not result.up_to_date:
        raise typer.Exit(1)


@app.command()
@handled
def verify(
    scratch_url: Annotated[Optional[str], typer.Option(
        "--scratch-url", help="A PostgreSQL server to create the scratch database on (default: the local one).",
        show_default=False)] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the scratch database afterwards.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replay every migration up -> down -> up on a scratch database with Nile's built-ins, then compare
    head with the models. Never touches the database in DATABASE_URL."""
    from rich.progress import Progress
    from rich.table import Table

    from nilemig.commands.verify import verify as run_verify

    project = _project()
    with Progress(console=err.console, transient=True, disable=as_json) as progress:
        task = progress.add_task("verifying", total=None)
        result = run_verify(
            project, scratch_url, keep,
            on_start=lambda total: progress.update(task, total=total),
            on_step=lambda name: (progress.update(task, description=escape(name)), progress.advance(task)),
        )
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        table = Table(title=f"nilemig verify: {result.steps} migration(s) on {escape(result.scratch)}")
        table.add_column("check")
        table.add_column("revision")
        table.add_column("result")
        for f in result.failures:
            table.add_row(f.kind, f.revision or "", f"[red]{escape(f.message)}[/]" + "".join(
                f"\n  {escape(d)}" for d in f.details))
        if result.ok:
            table.add_row("all", "", "[green]every step round-trips; the models match head[/]")
        out.print(table)
        if keep:
            err.print(f"Kept the scratch database: {escape(result.scratch)}")
    if not result.ok:
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

    project = _project()
    accepted = run_rebaseline(project, _database(project, database_url), revisions or [])
    out.print(f"Accepted {', '.join(accepted)} as reviewed." if accepted else "No edited migrations to accept.")


@app.command()
@handled
def history(database_url: DatabaseUrl = None) -> None:
    """List migrations, newest first; the database's current revision is marked."""
    from nilemig.commands.status import history as run_history

    project = _project()
    migrations = run_history(project, _database(project, database_url))
    if not migrations:
        out.print("No migrations yet: create one with `nilemig new \"message\"`.")
    for m in migrations:
        mark = "[bold green]→ current[/]" if m.current else ("applied" if m.applied else "[yellow]pending[/]")
        out.print(f"{m.revision}  {escape(m.message):<40}  {mark}")


@app.command()
@handled
def sql(
    revision_range: Annotated[str, typer.Argument(metavar="RANGE", help="head, or FROM:TO.")] = "head",
    downgrade: Annotated[bool, typer.Option("--down", help="Render the downgrade of RANGE (e.g. head:base).")] = False,
) -> None:
    """Print the SQL the migrations would run, without a database (like `alembic upgrade --sql`)."""
    from nilemig.commands.sql import render_sql

    sys.stdout.write(render_sql(_project(), revision_range, downgrade))


def _print_findings(findings, output_format: str, stderr: bool = False) -> None:
    from nilemig.core import display_path

    console = err if stderr else out
    if output_format == "json":
        console.print_json(json.dumps({"findings": [f.to_json() for f in findings]}))
        return
    if output_format == "github":
        from nilemig.commands.check import github_annotations

        sys.stdout.write(github_annotations(findings))
        return
    shown = None
    for f in findings:
        if f.path != shown:
            shown = f.path
            console.print(f"[bold]{escape(display_path(f.path))}[/]")
        colour = "red" if f.severity == "error" else "yellow"
        console.print(f"  {f.line:>4}  [{colour}]{f.severity:<7}[/] [bold]{f.code}[/]  {escape(f.message)}")


@app.command()
@handled
def check(
    output_format: Annotated[str, typer.Option("--format", help="text, json, or github (workflow annotations).")
                             ] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
) -> None:
    """Lint every migration against Nile's rules, from the files alone (no database)."""
    from nilemig.commands.check import run_check

    if output_format not in ("text", "json", "github"):
        raise UsageError(f"Unknown --format {output_format!r}: use text, json or github.")
    result = run_check(_project())
    if output_format == "json":
        out.print_json(json.dumps({"findings": [f.to_json() for f in result.findings],
                                   "errors": len(result.errors), "warnings": len(result.warnings),
                                   "migrations": result.migrations}))
    else:
        _print_findings(result.findings, output_format)
    if output_format == "text":
        summary = f"{len(result.errors)} error(s), {len(result.warnings)} warning(s) in {result.migrations} migration(s)."
        (err.print(f"[green]No problems found[/] in {result.migrations} migration(s).") if not result.findings
         else err.print(summary + " `nilemig rules CODE` explains a rule."))
    if result.errors or (strict and result.warnings):
        raise typer.Exit(1)


@app.command("rules")
@handled
def rules_command(code: Annotated[Optional[str], typer.Argument(help="Show one rule in full.")] = None) -> None:
    """List nilemig check's rules, or explain one with its bad and good example."""
    from nilemig.commands.check import rule, rules

    if code is None:
        for r in rules():
            out.print(f"{r.code:<8} {r.severity:<7}  {escape(r.title)}")
        return
    r = rule(code)
    out.print(f"[bold]{r.code}[/] ({r.severity}): {escape(r.title)}\n\n{escape(r.doc)}\n")
    out.print("[red]Bad:[/]")
    out.print(escape(r.bad), "\n")
    out.print("[green]Good:[/]")
    out.print(escape(r.good))


@local_app.command("url")
@handled
def local_url() -> None:
    """Start the local development database if needed and print its URL (for psql, or DATABASE_URL)."""
    from nilemig import local

    # The libpq form, which psql and other tools take as well as nilemig does.
    url = local.ensure_database(_project()).set(drivername="postgresql")
    out.print(url.render_as_string(hide_password=True))


@local_app.command("stop")
@handled
def local_stop() -> None:
    """Stop the local development database."""
    from nilemig import local

    out.print("Stopped the local development database." if local.stop(_project())
              else "The local development database was not running.")


@local_app.command("reset")
@handled
def local_reset(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False) -> None:
    """Drop the local development database and create it again (Nile's built-ins only)."""
    from nilemig import local

    project = _project()
    if not yes:
        _confirm("Delete all data in the local development database?", "`local reset` deletes all local data.")
    local.reset(project)
    out.print("The local development database is empty again (Nile's built-ins only); run `nilemig up`.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    import signal

    # SIGTERM (a CI job cancelled, a container stopped) rolls back like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    app()
