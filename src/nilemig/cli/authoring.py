"""`init`, `new`, `autogen`, `baseline` and `diff`: writing migrations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

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
    adopt: Annotated[bool, typer.Option("--adopt", help="Switch an existing Alembic project to nilemig's env.py "
                                        "(the old one is kept as env.py.orig).")] = False,
) -> None:
    """Create a Nile-ready Alembic project: alembic.ini, alembic/env.py, models.py, .env.example."""
    from nilemig.commands.init import init as run_init
    from nilemig.core import display_path

    if adopt:
        _print_adopted(directory)
        return
    result = run_init(directory, example=example)
    for path in result.created:
        out.print(f"created  {display_path(path)}")
    for path in result.existing:
        out.print(f"exists   {display_path(path)} (left as it is)")
    if result.gitignore_added:
        out.print(f"updated  {display_path(result.root / '.gitignore')} (+ {', '.join(result.gitignore_added)})")
    if result.foreign_env_py:
        err.print("[yellow]alembic/env.py is not nilemig's:[/] nilemig will run it as it is, with the database "
                  "nilemig chooses, but without nilemig's lock, ledger, per-migration transactions and "
                  "autogenerate filters. `nilemig init --adopt` switches to nilemig's env.py, keeping yours as "
                  "env.py.orig and carrying over what it can.")
    if not result.created:
        out.print("Nothing to do: the project is already initialised.")
        return
    steps = [] if result.root == Path.cwd() else [f"cd {display_path(result.root)}"]
    steps.append("copy .env.example to .env and set DATABASE_URL (or skip this to use the local development "
                 "database)")
    steps.append("nilemig up" if example else 'nilemig new "create account table", fill it in, then nilemig up')
    out.print("\nNext: " + "; ".join(steps) + ".")


def _print_adopted(directory: Path) -> None:
    from nilemig.commands.init import adopt
    from nilemig.core import display_path

    result = adopt(directory)
    out.print(f"kept     {display_path(result.original)} (your env.py, unchanged)")
    out.print(f"wrote    {display_path(result.env_py)} (nilemig's; alembic.ini left as it was)")
    for path in result.created:
        out.print(f"created  {display_path(path)}")
    if result.gitignore_added:
        out.print(f"updated  .gitignore (+ {', '.join(result.gitignore_added)})")
    for title, lines in (("Carried over", result.carried), ("Now done by nilemig", result.replaced),
                         ("[yellow]Not carried over[/] (add it to env.py by hand if you need it)", result.not_carried)):
        if lines:
            out.print(f"{title}:")
            for line in lines:
                out.print(f"  {escape(line)}")
    out.print("New: one transaction per migration, the migration lock and ledger, and autogenerate filters that "
              "leave Nile's built-in tables alone.")
    for where in result.tenant_mirrors:
        err.print(f"[yellow]{escape(where)} defines its own `tenants` table,[/] a copy of Nile's built-in one. "
                  "Use Nile's instead: `tenants = define_tenants(Base.metadata)` (from nilemig.nile import "
                  "define_tenants, TenantAware) and TenantAware for tenant-aware tables. nilemig's autogenerate "
                  "leaves Nile's columns alone either way.")
    out.print("\nNext: nilemig status, then nilemig up.")


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
def baseline(
    message: Annotated[str, typer.Argument(help="What the migration holds, e.g. \"existing schema\".")],
    models: Annotated[bool, typer.Option("--models", help="Also write models.py from the database (sqlacodegen, "
                                         "the `baseline` extra).")] = False,
    scratch_url: Annotated[Optional[str], typer.Option(
        "--scratch-url", help="PostgreSQL server for the scratch database that replays existing migrations "
        "(default: the local one).", show_default=False)] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write one migration creating what the database has (beyond its migrations), recorded as applied there."""
    from nilemig.commands.baseline import baseline as run_baseline
    from nilemig.core import display_path

    project = current_project()
    result = run_baseline(project, chosen_database(project, database_url), message, models=models,
                          scratch_url=scratch_url)
    out.print(display_path(result.path))
    err.print(f"[green]Baseline {result.revision}[/] creates {len(result.tables)} table(s) "
              f"({escape(', '.join(result.tables)) or 'none'}) and is recorded as applied on this database "
              "without running it.")
    for note in result.not_reflected:
        err.print(f"[yellow]Not reflected:[/] {escape(note)} (noted in the file; create it by hand if needed)")
    if result.models is not None:
        out.print(display_path(result.models))
    else:
        err.print("models.py is unchanged: `nilemig verify` and `nilemig diff` compare it with the database "
                  "(`--models` writes it from the database).")


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


