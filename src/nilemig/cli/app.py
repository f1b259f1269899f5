"""The Typer apps, the error handling every command shares, and the options several commands take.

Command modules (authoring, migrating, checking, local) register on these apps; the
work itself lives in `nilemig.commands`, imported inside each command so that
`nilemig --help` stays fast (no SQLAlchemy, Alembic or psycopg until a command needs them).
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Annotated, Any, Callable, Optional

import typer

from nilemig import __version__
from nilemig.cli.output import err, escape, out
from nilemig.errors import NilemigError, UsageError, redact

app = typer.Typer(
    help="Safe, Nile-aware database migrations on top of Alembic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion, --show-completion
    # Plain help: rendering it with rich would double `nilemig --help`'s start-up time.
    rich_markup_mode=None,
)
local_app = typer.Typer(help="The local development database (used when no DATABASE_URL is set).",
                        no_args_is_help=True)
app.add_typer(local_app, name="local")

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


def current_project():
    from nilemig.config import find_project

    return find_project()


def chosen_database(project, database_url: str | None):
    from nilemig.core import resolve_database

    database = resolve_database(project, database_url)
    err.print(escape(database.describe()))
    return database

def announce_no_check(no_check: bool) -> None:
    if no_check:
        err.print("[yellow]Skipping nilemig check (--no-check).[/]")


def confirm(question: str, refusal: str) -> None:
    """Ask on a terminal; without one, refuse and point at --yes."""
    if not sys.stdin.isatty():
        raise UsageError(f"{refusal} There is no terminal to ask for confirmation: pass --yes to go ahead.")
    typer.confirm(question, abort=True)


