"""`local url`, `local stop`, `local reset`: the local development database."""

from __future__ import annotations

from typing import Annotated

import typer

from nilemig.cli.app import confirm, current_project, handled, local_app
from nilemig.cli.output import out


@local_app.command("url")
@handled
def local_url(
    tcp: Annotated[bool, typer.Option(
        "--tcp", help="A TCP URL on 127.0.0.1 for tools that cannot take the socket form; its password stays in "
                      ".nilemig/ (mode 600), named by the URL's passfile=.")] = False,
) -> None:
    """Start the local development database if needed and print its URL (for psql, or DATABASE_URL)."""
    from nilemig import local

    project = current_project()
    # The libpq form, which psql and other tools take as well as nilemig does.
    url = local.tcp_url(project) if tcp else \
        local.ensure_database(project).set(drivername="postgresql").render_as_string(hide_password=True)
    out.print(url, markup=False, highlight=False, soft_wrap=True)


@local_app.command("stop")
@handled
def local_stop() -> None:
    """Stop the local development database."""
    from nilemig import local

    out.print("Stopped the local development database." if local.stop(current_project())
              else "The local development database was not running.")


@local_app.command("reset")
@handled
def local_reset(yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask first.")] = False) -> None:
    """Drop the local development database and create it again (Nile's built-ins only)."""
    from nilemig import local

    project = current_project()
    if not yes:
        confirm("Delete all data in the local development database?", "`local reset` deletes all local data.")
    local.reset(project)
    out.print("The local development database is empty again (Nile's built-ins only); run `nilemig up`.")


