"""The Typer apps, the error handling every command shares, and the options several commands take.

Command modules (authoring, migrating, checking, local) register on these apps; the
work itself lives in `nilemig.commands`, imported inside each command so that
`nilemig --help` stays fast (no SQLAlchemy, Alembic or psycopg until a command needs them).
"""

from __future__ import annotations

import functools
import logging
import sys
import traceback
from typing import Annotated, Any, Callable, Optional

import typer

from nilemig import __version__
from nilemig.cli.output import err, escape, out
from nilemig.errors import (
    EXIT_ANSWER_IS_NO,
    EXIT_COULD_NOT_RUN,
    EXIT_INTERRUPTED,
    NilemigError,
    UsageError,
    holds_password,
    redact,
)

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
    """Show a NilemigError, or a user mistake `core.explain` recognises, as one paragraph and exit with
    its code (README, "Exit codes"); anything else is a bug: say so, redacted, and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except typer.Abort:  # "n" (or Ctrl-D) at a confirmation: the answer is no.
            err.print("Not confirmed: nothing was changed.")
            raise typer.Exit(EXIT_ANSWER_IS_NO) from None
        except KeyboardInterrupt:
            err.print("[bold red]Interrupted.[/]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
            _show_trace(exc)
            explained = _explained(exc)
            if explained is not None:
                err.print(f"[bold red]Error:[/] {escape(str(explained))}")
                raise typer.Exit(explained.exit_code) from None
            err.print(
                f"[bold red]Error:[/] {escape(redact(f'{type(exc).__name__}: {exc}'))}. "
                "This is unexpected; run again with --debug for details and report it."
            )
            raise typer.Exit(EXIT_COULD_NOT_RUN) from None

    return wrapper


def _explained(exc: Exception) -> NilemigError | None:
    if isinstance(exc, NilemigError):
        return exc
    from nilemig.core import explain

    return explain(exc, None)


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


def current_project(section: str = "alembic", find_foreign_env_py=None):
    """The project here, reading `section` of its alembic.ini (`-n`); says once when its env.py is not nilemig's
    (as `find_foreign_env_py(project)` tells, by default `core.foreign_env_py`)."""
    from dataclasses import replace

    from nilemig.config import find_project
    from nilemig.core import foreign_env_py, foreign_env_py_notice

    project = replace(find_project(), section=section)
    env_py = (find_foreign_env_py or foreign_env_py)(project)
    if env_py is not None:
        err.print(f"[yellow]Note:[/] {escape(foreign_env_py_notice(env_py))}")
        # Its logging set-up (fileConfig) would repeat, as INFO lines, the progress nilemig prints itself.
        logging.disable(logging.INFO)
    return project


def chosen_database(project, database_url: str | None):
    from nilemig.core import resolve_database

    warn_password_on_command_line(database_url, "--database-url")
    database = resolve_database(project, database_url)
    err.print(escape(database.describe()))
    return database


def warn_password_on_command_line(url: str | None, option: str) -> None:
    if url is not None and holds_password(url):
        err.print(f"[yellow]Warning:[/] the password in {option} is visible to other users of this machine in "
                  "the process list. Set DATABASE_URL in the environment or in .env instead, or pass a URL "
                  "without a password and let libpq read it from PGPASSWORD or ~/.pgpass.")

def announce_no_check(no_check: bool) -> None:
    if no_check:
        err.print("[yellow]Skipping nilemig check (--no-check).[/]")


def has_terminal() -> bool:
    return sys.stdin.isatty()


def confirm(question: str, refusal: str) -> None:
    """Ask on a terminal; without one, refuse and point at --yes."""
    if not has_terminal():
        raise UsageError(f"{refusal} There is no terminal to ask for confirmation: pass --yes to go ahead.")
    typer.confirm(question, abort=True)


