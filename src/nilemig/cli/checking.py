"""`check`, `rules`, `sql` and `verify`: looking at migrations before they reach Nile."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from nilemig.cli.app import app, current_project, handled, warn_password_on_command_line
from nilemig.cli.output import (
    err,
    escape,
    out,
    print_findings,
    print_table,
    progress_bar,
)
from nilemig.errors import UsageError

IniSection = Annotated[str, typer.Option(
    "--name", "-n", help="The section of alembic.ini to read, like `alembic -n` (default: alembic).")]


def _show_printed(printed) -> None:
    """What migration code printed while rendering: captured, so it never mixes with the SQL or JSON on stdout."""
    from nilemig.core import display_path

    for path, text in printed:
        err.print(f"[dim]Note: {escape(display_path(path))} printed while rendering:[/]")
        err.print(escape("".join(f"  | {line}\n" for line in text.rstrip("\n").splitlines())), end="")


@app.command()
@handled
def check(
    output_format: Annotated[str, typer.Option("--format", help="text, json, or github (workflow annotations).")
                             ] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    with_squawk: Annotated[Optional[bool], typer.Option(
        "--squawk/--no-squawk", help="Add squawk's online-safety rules, told about Nile (default: [tool.nilemig] "
        "squawk in pyproject.toml).", show_default=False)] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Render every migration again, ignoring and "
                                           "leaving alone what earlier checks kept in .nilemig/cache/.")] = False,
    section: IniSection = "alembic",
) -> None:
    """Lint every migration against Nile's rules, from the files alone (no database)."""
    from nilemig.commands.check import foreign_env_py, run_check
    from nilemig.core import display_path

    if output_format not in ("text", "json", "github"):
        raise UsageError(f"Unknown --format {output_format!r}: use text, json or github.")
    project = current_project(section, lambda found: foreign_env_py(found, use_cache=not no_cache))
    result = run_check(project, with_squawk=with_squawk, use_cache=not no_cache)
    if output_format == "json":
        out.print_json(json.dumps({"findings": [f.to_json() for f in result.findings],
                                   "errors": len(result.errors), "warnings": len(result.warnings),
                                   "migrations": result.migrations,
                                   "printed": [{"file": display_path(p), "text": t} for p, t in result.printed]}))
    else:
        print_findings(result.findings, output_format)
    if output_format == "text":
        _show_printed(result.printed)
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




@app.command()
@handled
def sql(
    revision_range: Annotated[str, typer.Argument(metavar="RANGE", help="head, or FROM:TO.")] = "head",
    downgrade: Annotated[bool, typer.Option("--down", help="Render the downgrade of RANGE (e.g. head:base).")] = False,
    section: IniSection = "alembic",
) -> None:
    """Print the SQL the migrations would run, without a database (like `alembic upgrade --sql`).
    A migration that cannot be rendered is marked by a SQL comment; then the exit code is 1."""
    from nilemig.commands.sql import render_sql
    from nilemig.core import display_path

    rendered = render_sql(current_project(section), revision_range, downgrade)
    sys.stdout.write(rendered.script)
    sys.stdout.flush()
    _show_printed(rendered.printed)
    if rendered.failed:
        listed = "; ".join(f"{display_path(p)} line {line}: {reason}" for p, line, reason in rendered.failed)
        err.print(f"[bold red]{len(rendered.failed)} migration(s) could not be rendered in full[/] "
                  f"(marked with `-- nilemig:` comments): {escape(listed)}")
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
    from nilemig.commands.verify import verify as run_verify

    warn_password_on_command_line(scratch_url, "--scratch-url")
    project = current_project()
    with progress_bar("verifying", disable=as_json) as progress:
        result = run_verify(project, scratch_url, keep, on_start=progress.start, on_step=progress.step)
    if as_json:
        out.print_json(json.dumps(result.to_json()))
    else:
        print_table(
            f"nilemig verify: {result.steps} migration(s) on {escape(result.scratch)}", ("check", "revision", "result"),
            [(f.kind, f.revision or "", f"[red]{escape(f.message)}[/]" + "".join(f"\n  {escape(d)}" for d in f.details))
             for f in result.failures]
            + ([("all", "", "[green]every step round-trips; the models match head[/]")] if result.ok else []),
        )
        if keep:
            err.print(f"Kept the scratch database: {escape(result.scratch)}")
    if not result.ok:
        raise typer.Exit(1)


