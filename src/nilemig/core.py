"""What every command shares: the Alembic Config and ScriptDirectory of a project,
the database's current revision, and turning failures into one-paragraph errors."""

from __future__ import annotations

import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from nilemig.errors import NilemigError, sentence
from nilemig.keys import DATABASE_KEY, FROM_CLI_KEY, ON_APPLY_KEY

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

    from nilemig.config import Database, Project


def alembic_config(
    project: Project,
    database: Database | None = None,
    on_version_apply: Callable[..., Any] | None = None,
    output: TextIO | None = None,
) -> Config:
    from argparse import Namespace

    from alembic.config import Config

    # quiet: nilemig reports progress itself; x: env.py code may read `-x` arguments.
    config = Config(str(project.ini_path), ini_section=project.section, stdout=output or sys.stdout,
                    output_buffer=output, cmd_opts=Namespace(quiet=True, x=None))
    config.attributes[FROM_CLI_KEY] = True
    if database is not None:
        config.attributes[DATABASE_KEY] = database
    if on_version_apply is not None:
        config.attributes[ON_APPLY_KEY] = on_version_apply
    return config


def resolve_database(project: Project, cli_url: str | None = None) -> Database:
    """The database to use; starts the local development database when nothing is configured."""
    from nilemig import local
    from nilemig.config import Database, choose_database

    return choose_database(project, cli_url) or Database(local.ensure_database(project), "local")


def script_directory(project: Project, config: Config) -> ScriptDirectory:
    """The project's migrations, all loaded, so a broken file is reported before anything runs."""
    from alembic.script import ScriptDirectory

    with explain_errors(project):
        scripts = ScriptDirectory.from_config(config)
        scripts.get_heads()
    return scripts


def connection_heads(connection: Any) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(MigrationContext.configure(connection).get_current_heads())


def current_heads(database: Database) -> tuple[str, ...]:
    from nilemig.database import connect

    with connect(database) as connection:
        return connection_heads(connection)


def database_state(database: Database, scripts: ScriptDirectory):
    """The database's current revision(s), and how its applied migrations differ from the files (ledger.Drift)."""
    from nilemig import ledger
    from nilemig.database import connect

    with connect(database) as connection:
        current = connection_heads(connection)
        return current, ledger.drift(connection, scripts, current)


def pending_scripts(scripts: ScriptDirectory, current: tuple[str, ...], target: str = "heads") -> list[Script]:
    """Migrations `up TARGET` would apply (all not yet applied, by default), in the order it applies them."""
    lower = current if current else "base"
    relative = re.fullmatch(r"\+(\d+)", target)
    with explain_errors(None):
        upper = "heads" if relative or target == "head" else target
        pending = list(reversed(list(scripts.iterate_revisions(upper, lower))))
    return pending[: int(relative[1])] if relative else pending


@contextmanager
def alembic_chatter_silenced() -> Iterator[None]:
    """Alembic's post-write hooks print progress to stdout whatever `quiet` says; nilemig's stdout is data."""
    import io
    from contextlib import redirect_stdout

    with redirect_stdout(io.StringIO()):
        yield


def configure_formatter(config: Config) -> None:
    """Format written migrations with ruff, else black, through Alembic's post-write hooks.

    Only when one is installed and the project has not configured hooks of its own:
    a formatter that is missing must never make writing a migration fail.
    """
    section = "post_write_hooks"
    if config.get_section_option(section, "hooks"):
        return
    for name, options in (("ruff", "format --quiet REVISION_SCRIPT_FILENAME"), ("black", "--quiet REVISION_SCRIPT_FILENAME")):
        executable = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if executable:
            config.set_section_option(section, "hooks", name)
            config.set_section_option(section, f"{name}.type", "exec")
            config.set_section_option(section, f"{name}.executable", executable)
            config.set_section_option(section, f"{name}.options", options)
            return


def describe_revisions(revisions: tuple[str, ...], scripts: ScriptDirectory | None = None) -> str:
    if not revisions:
        return "base (no migrations applied)"
    parts = []
    for rev in revisions:
        script = scripts.get_revision(rev) if scripts is not None else None
        parts.append(f"{rev} ({script.doc})" if script is not None and script.doc else rev)
    return ", ".join(parts)


def display_path(path: str | os.PathLike[str]) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def failing_frame(exc: BaseException, root: Path) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback that runs a file of the project (a migration, models.py)."""
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        # Alembic's op functions are compiled from strings: their frames say "<string>".
        if path.is_file() and path.resolve().is_relative_to(root):
            found = frame
    return found


def failure_reason(exc: BaseException) -> str:
    """The database's own message for a failed statement (its first line), else the exception's."""
    orig = getattr(exc, "orig", None)
    text = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig or exc)
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else type(exc).__name__


def explain(exc: BaseException, project: Project | None) -> NilemigError | None:
    """A NilemigError for Alembic's errors and broken project files (naming file and line), else None."""
    from alembic.util import CommandError

    if isinstance(exc, NilemigError):
        return exc
    if isinstance(exc, CommandError):
        return NilemigError(sentence(str(exc)))
    if isinstance(exc, SyntaxError) and exc.filename:
        return NilemigError(
            f"Syntax error in {display_path(exc.filename)}, line {exc.lineno}: {sentence(exc.msg)} "
            "Fix the file and run the command again; nothing was run."
        )
    frame = failing_frame(exc, project.root) if project is not None else None
    if frame is None:
        return None
    return NilemigError(
        f"{display_path(frame.filename)}, line {frame.lineno} raised {type(exc).__name__}: {sentence(str(exc))} "
        "Fix the file and run the command again."
    )


@contextmanager
def explain_errors(project: Project | None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        explained = explain(exc, project)
        if explained is None or explained is exc:
            raise
        raise explained from None
