"""What every command shares: the Alembic Config and ScriptDirectory of a project,
the database's current revision, and turning failures into one-paragraph errors."""

from __future__ import annotations

import errno
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
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory

    from nilemig.config import Database, Project
    from nilemig.runsettings import RunSettings


def alembic_config(
    project: Project,
    database: Database | None = None,
    on_version_apply: Callable[..., Any] | None = None,
    output: TextIO | None = None,
) -> Config:
    from argparse import Namespace

    # quiet: nilemig reports progress itself; x: env.py code may read `-x` arguments.
    config = _config_class()(str(project.ini_path), ini_section=project.section, stdout=output or sys.stdout,
                             output_buffer=output, cmd_opts=Namespace(quiet=True, x=None))
    config.attributes[FROM_CLI_KEY] = True
    # An env.py that is not nilemig's reads `sqlalchemy.url`: give it the database nilemig chose
    # (only the dialect when rendering offline), in memory only, and keep it there (see _config_class).
    # A section the file lacks stays missing, so that require_script_location can say so.
    if config.file_config.has_section(project.section):
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


def foreign_env_py(project: Project, scripts: ScriptDirectory | None = None) -> Path | None:
    """The project's env.py when it is not nilemig's (it does not call nilemig.alembic_env), else None."""
    from alembic.script import ScriptDirectory

    if scripts is None:
        config = alembic_config(project)
        require_script_location(project, config)
        with explain_errors(project):
            scripts = ScriptDirectory.from_config(config)
    path = Path(scripts.env_py_location)
    if path.is_file() and ENV_PY_MARKER in path.read_text(encoding="utf-8"):
        return None
    return path


def require_script_location(project: Project, config: Any) -> None:
    """A clear message where Alembic would say "No 'script_location' key found" (or crash on a missing section)."""
    section = config.config_ini_section
    if config.get_alembic_option("script_location") is not None:
        return
    parser = config.file_config
    others = [s for s in parser.sections() if s != section and parser.has_option(s, "script_location")]
    ini = display_path(project.ini_path)
    where = f"has no [{section}] section" if not parser.has_section(section) else \
        f"has no script_location in its [{section}] section"
    if others:
        hint = (f" Section(s) {', '.join(f'[{s}]' for s in others)} have one: pass `--name {others[0]}` "
                "to `check` or `sql` to read that section (like `alembic -n`).")
    else:
        hint = (" Add `script_location = <the folder holding env.py and versions/>` to it (Flask-Migrate "
                "projects set it in code; theirs is usually `migrations`).")
    raise NilemigError(f"{ini} {where}, so nilemig cannot find the migrations.{hint}")


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
    """What the database holds (ledger.State: current revision(s), ledger rows), and how its applied migrations
    differ from the files (ledger.Drift), read on one connection in two round trips."""
    from nilemig import ledger
    from nilemig.database import autocommit, connect

    with connect(database) as connection, autocommit(connection), ledger.privileges_explained(connection):
        state = ledger.read_state(connection)
    return state, ledger.drift(state, scripts)


def pending_scripts(scripts: ScriptDirectory, current: tuple[str, ...], target: str = "heads") -> list[Script]:
    """Migrations `up TARGET` would apply (all not yet applied, by default), in the order it applies them."""
    lower = current if current else "base"
    relative = re.fullmatch(r"\+(\d+)", target)
    with explain_errors(None):
        upper = "heads" if relative or target == "head" else target
        pending = list(reversed(list(scripts.iterate_revisions(upper, lower))))
    return pending[: int(relative[1])] if relative else pending


def retry_transient_failures(migration_context: MigrationContext, settings: RunSettings) -> None:
    """Make every migration this context runs retry when another session made it fail (a lock not taken
    within the table lock timeout, a deadlock, a serialization conflict): rolled back to its start and
    run again, up to `settings.retries` times with exponential backoff and jitter, each retry said.

    A migration with an `autocommit_block` is never retried: part of it has already been committed.
    """
    # Alembic has no public hook around one step: the steps come from this function, so wrap what it yields.
    steps_of = migration_context._migrations_fn
    connection = migration_context.connection

    def steps(heads: Any, context: Any) -> Iterator[Any]:
        for step in steps_of(heads, context):
            script = getattr(step, "revision", None)
            transactional = script is not None and not has_autocommit_block(script)
            yield _RetriedStep(step, connection, settings) if transactional and settings.retries else step

    migration_context._migrations_fn = steps


def has_autocommit_block(script: Script) -> bool:
    """Whether a migration runs statements outside its transaction, so a failure cannot undo all of it."""
    return "autocommit_block" in Path(script.path).read_text("utf-8")


class _RetriedStep:
    """An Alembic migration step whose migration function runs under `_run_retrying`."""

    def __init__(self, step: Any, connection: Any, settings: RunSettings):
        self._step, self._connection, self._settings = step, connection, settings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._step, name)

    def __str__(self) -> str:
        return str(self._step)

    @property
    def migration_fn(self) -> Callable[..., None]:
        script = self._step.revision
        return functools.partial(_run_retrying, self._step.migration_fn, self._connection, self._settings,
                                 f"{script.revision} ({script.doc})" if script.doc else script.revision)


def _run_retrying(migration_fn: Callable[..., None], connection: Any, settings: RunSettings, name: str,
                  **kw: Any) -> None:
    import random
    import time

    from sqlalchemy.exc import DBAPIError

    from nilemig.database import TRANSIENT_FAILURES, sqlstate
    from nilemig.runsettings import RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS

    attempt = 0
    while True:
        try:
            migration_fn(**kw)
        except DBAPIError as exc:
            why = TRANSIENT_FAILURES.get(sqlstate(exc))
            if why is None or attempt >= settings.retries:
                raise
            # The migration runs first in its own transaction (nilemig's env.py makes Alembic's version table
            # before any), so rolling that transaction back undoes exactly what the migration did and releases
            # every lock it took; the next statement begins a new one, which Alembic commits as usual. Done on
            # the driver's connection, under SQLAlchemy's transaction object that Alembic holds: unlike a
            # savepoint per migration, this costs no round trip when nothing fails.
            connection.connection.dbapi_connection.rollback()
            attempt += 1
            backoff = min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1))
            delay = backoff / 2 + random.uniform(0, backoff / 2)  # jitter: racing runners spread out
            settings.on_notice(f"Migration {name} {why}; rolled it back, retry {attempt} of {settings.retries} "
                               f"in {delay:.1f} s...")
            time.sleep(delay)
        else:
            return


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


def explain(exc: BaseException, project: Project | None) -> NilemigError | None:
    """A NilemigError for Alembic's errors, user mistakes (a broken chain, a corrupt alembic.ini, a file
    nilemig may not read or write) and broken project files (naming file and line), else None: a bug."""
    import configparser

    from alembic.script.revision import RevisionError
    from alembic.util import CommandError

    from nilemig.ledger import missing_privilege

    if isinstance(exc, NilemigError):
        return exc
    denied = missing_privilege(exc, None)
    if denied is not None:
        return denied
    if isinstance(exc, (CommandError, RevisionError)):
        return NilemigError(sentence(str(exc)))
    if isinstance(exc, KeyError) and _raised_in_alembic(exc):
        # Alembic's revision map looks revisions up by key: one named in a down_revision, or by the
        # database, that no file has.
        return NilemigError(
            f"No migration file has revision {exc.args[0]!r}, yet a migration's down_revision or the database "
            "refers to it (a file deleted, renamed, or from another branch). `nilemig check` names a "
            "down_revision that points nowhere; restore the missing file (e.g. from git) or fix the down_revision."
        )
    if isinstance(exc, configparser.Error):
        where = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        return NilemigError(
            f"alembic.ini{where} is not a valid INI file ({type(exc).__name__}). Fix it (it starts with an "
            "[alembic] section), or restore it from git; `nilemig init` in an empty directory writes a fresh one."
        )
    if isinstance(exc, OSError) and exc.filename:
        advice = ("Check that this user may read and write it, and its directory, then run again."
                  if isinstance(exc, PermissionError) or exc.errno == errno.EROFS else "Check the path, then run again.")
        return NilemigError(
            f"Could not use {display_path(exc.filename)}: {exc.strerror or type(exc).__name__}. {advice}"
        )
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


def _raised_in_alembic(exc: BaseException) -> bool:
    import alembic

    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and Path(frames[-1].filename).is_relative_to(Path(alembic.__file__).parent)


@contextmanager
def explain_errors(project: Project | None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        explained = explain(exc, project)
        if explained is None or explained is exc:
            raise
        raise explained from None
