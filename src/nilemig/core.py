"""What every command shares: the Alembic Config and ScriptDirectory of a project,
the database's current revision, and turning failures into one-paragraph errors."""

from __future__ import annotations

import functools
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

# What nilemig's generated env.py imports; an env.py without it is the project's own.
ENV_PY_MARKER = "nilemig.alembic_env"
URL_OPTION = "sqlalchemy.url"
# Rendering SQL offline needs only the dialect.
OFFLINE_URL = "postgresql+psycopg://"

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

    # quiet: nilemig reports progress itself; x: env.py code may read `-x` arguments.
    config = _config_class()(str(project.ini_path), stdout=output or sys.stdout, output_buffer=output,
                             cmd_opts=Namespace(quiet=True, x=None))
    config.attributes[FROM_CLI_KEY] = True
    # An env.py that is not nilemig's reads `sqlalchemy.url`: give it the database nilemig chose
    # (only the dialect when rendering offline), in memory only, and keep it there (see _config_class).
    url = database.url.render_as_string(hide_password=False) if database is not None else OFFLINE_URL
    config.set_main_option(URL_OPTION, url.replace("%", "%%"))
    config.url_pinned = True
    if database is not None:
        config.attributes[DATABASE_KEY] = database
    if on_version_apply is not None:
        config.attributes[ON_APPLY_KEY] = on_version_apply
    return config


@functools.cache
def _config_class() -> type[Config]:
    """Alembic's Config, with `sqlalchemy.url` pinned once nilemig has set it.

    Env.py files that are not nilemig's (Alembic's stock one, Nile's example) set it from
    `os.environ.get("DATABASE_URL")`: None when nilemig chose the database from `.env`,
    `--database-url` or the local one, `postgres://` that SQLAlchemy refuses, or a
    password whose `%` configparser rejects. nilemig's choice stands instead.
    """
    from alembic.config import Config

    class PinnedUrlConfig(Config):
        url_pinned = False

        def set_section_option(self, section: str, name: str, value: str) -> None:
            if self.url_pinned and name == URL_OPTION and section == self.config_ini_section:
                return
            super().set_section_option(section, name, value)

    return PinnedUrlConfig


def foreign_env_py(project: Project) -> Path | None:
    """The project's env.py when it is not nilemig's (it does not call nilemig.alembic_env), else None."""
    from alembic.script import ScriptDirectory

    with explain_errors(project):
        path = Path(ScriptDirectory.from_config(alembic_config(project)).env_py_location)
    if path.is_file() and ENV_PY_MARKER in path.read_text(encoding="utf-8"):
        return None
    return path


def foreign_env_py_notice(env_py: Path) -> str:
    return (f"{display_path(env_py)} is not nilemig's: nilemig runs it with the database it chose, but nilemig's "
            "migration lock, ledger, one transaction per migration and autogenerate filters (which keep "
            "Nile's built-in tables out of generated migrations) do not apply. `nilemig init --adopt` "
            "switches to nilemig's env.py, carrying over what it can and keeping yours as env.py.orig.")


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


def connection_heads(connection: Any, **version_table: str) -> tuple[str, ...]:
    """The current revision(s); `version_table` takes Alembic's version_table(_schema) options."""
    from alembic.runtime.migration import MigrationContext

    return tuple(MigrationContext.configure(connection, opts=version_table).get_current_heads())


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
