"""`init`, `new`, `autogen` and `diff`: writing migrations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nilemig.cli.app import (
    DatabaseUrl,
    announce_no_check,
    app,
    chosen_database,
    current_project,
    handled,
)
from nilemig.cli.output import err, escape, out, print_findings
from nilemig.errors import AnswerIsNo


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

    out.print(display_path(run_new(current_project(), message)))


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

    project = current_project()
    database = chosen_database(project, database_url)
    announce_no_check(no_check)
    result = run_autogen(project, database, message, check=not no_check)
    if result.path is None:
        err.print("No changes: the models match the database. No migration written.")
        return
    out.print(display_path(result.path))
    print_findings(result.findings, "text", stderr=True)
    if result.destructive:
        err.print(f"[bold red]{len(result.destructive)} destructive operation(s), marked in the file:[/]")
        for line, reason in result.destructive:
            err.print(f"[red]  line {line}: {escape(reason)}[/]")
        err.print('Review each; then change its "# nilemig: destructive" comment to "# nilemig: destructive-ok" '
                  "(or delete it). Until then `nilemig up` refuses to apply it.")
    errors = [f for f in result.findings if f.severity == "error"]
    if errors:
        raise AnswerIsNo(f"The new migration {display_path(result.path)} breaks {len(errors)} of Nile's rules "
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

    project = current_project()
    differences = run_diff(project, chosen_database(project, database_url))
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


