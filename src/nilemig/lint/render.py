"""Migrations rendered to SQL by Alembic's offline mode (no database), through the project's env.py,
one migration at a time in chain order: a migration that fails stops only itself.

Offline, `op.get_bind()` is a stand-in that renders what is executed on it. Here the results it returns
raise `NeedsDatabase` when read, so a migration that reads rows stops exactly there, with every statement
before that line rendered. Values SQLAlchemy was not given a type for (an untyped `op.bulk_insert`,
parameters passed to `execute`) are rendered from their Python type, as the driver would send them.
Whatever migration code prints is captured, so nilemig's own output stays valid JSON or SQL.
"""

from __future__ import annotations

import builtins
import functools
import io
import itertools
import os
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.core import (
    alembic_config,
    display_path,
    explain_errors,
    require_script_location,
)
from nilemig.lint.chain import MigrationFile

if TYPE_CHECKING:
    from nilemig.config import Project


class NeedsDatabase(BaseException):
    """Raised when a migration reads what a query returned: offline there is nothing to read.

    A BaseException, so that a migration's own `except Exception:` cannot swallow it and go on as if
    it had read something."""


@dataclass
class Emitted:
    sql: str
    line: int  # the line of the migration file that emitted it (innermost on the stack)
    lines: frozenset[int]  # every line of the migration file on the stack: where an ignore comment may sit
    existing_types: dict[str, str] = field(default_factory=dict)  # column -> `existing_type=` as SQL


@dataclass
class Stop:
    """A migration that raised while rendering: what ran before `line` was rendered, nothing after."""

    line: int
    offline_only: bool  # it needs a live database (reads rows, reflects); else it fails on Nile too
    reason: str


@dataclass
class MigrationRender:
    """One migration's part of a render: what `nilemig check` keeps in its cache between runs."""

    statements: list[Emitted]
    stop: Stop | None
    printed: str  # what its code printed, as it was imported and as it ran
    # What Alembic read from the module (`SCRIPT_ATTRIBUTES`): enough to stand in for it in the chain, so that a
    # migration whose render is reused is not imported again. None: it must be imported.
    script: dict[str, Any] | None = None


# The module attributes Alembic builds its revision map from (alembic.script.base.Script).
SCRIPT_ATTRIBUTES = ("revision", "down_revision", "branch_labels", "depends_on", "__doc__")


def script_attributes(module: types.ModuleType) -> dict[str, Any] | None:
    """`SCRIPT_ATTRIBUTES` of an imported migration, when each is a string, None or a list of strings."""
    found: dict[str, Any] = {}
    for name in SCRIPT_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
            value = list(value)
        elif value is not None and not isinstance(value, str):
            return None
        found[name] = value
    return found if isinstance(found["revision"], str) else None


@dataclass
class Rendered:
    order: list[str] = field(default_factory=list)  # migration keys (real paths), in the order they ran
    statements: dict[str, list[Emitted]] = field(default_factory=dict)
    stops: dict[str, Stop] = field(default_factory=dict)
    printed: dict[Path, str] = field(default_factory=dict)  # file -> what its code printed, in order
    # The whole script, as `alembic upgrade --sql` prints it (without the migrations whose render was reused)
    text: list[str] = field(default_factory=list)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> `script_attributes` of its module
    imports: set[str] = field(default_factory=set)  # the user's own module files the rendered migrations use
    environ: set[str] = field(default_factory=set)  # the environment variables they read

    def note_printed(self, path: str, text: str) -> None:
        if text.strip():
            self.printed[Path(path)] = self.printed.get(Path(path), "") + text

    def of(self, key: str) -> MigrationRender:
        return MigrationRender(self.statements[key], self.stops.get(key), self.printed.get(Path(key), ""),
                               self.scripts.get(key))


class _OfflineResult:
    """What `op.get_bind().execute(...)` returns offline: the statement was rendered, its rows do not exist."""

    def __init__(self, statement: Any):
        self._statement = statement

    def _needs_database(self, how: str) -> NeedsDatabase:
        sql = " ".join(str(self._statement).split())
        return NeedsDatabase(f"it reads the result of `{sql[:80]}{'...' if len(sql) > 80 else ''}` ({how})")

    def __getattr__(self, name: str):
        raise self._needs_database(f".{name}")

    def __iter__(self):
        raise self._needs_database("iterating over it")

    def __len__(self) -> int:
        raise self._needs_database("len()")

    def __bool__(self) -> bool:
        raise self._needs_database("truth test")

    def __getitem__(self, item: object):
        raise self._needs_database("indexing")


class _Recorder:
    """Stands in for Alembic's output buffer: keeps the script, and each migration's statements with their lines."""

    def __init__(self, rendered: Rendered):
        self.rendered = rendered
        self.filename: str | None = None  # co_filename of the migration running now
        self.statements: list[Emitted] = []
        self.existing_types: dict[str, str] = {}
        # True after a reused render, until the next migration runs: Alembic's version-table statement for that
        # step is not compiled (it costs more than everything else about a reused step) nor written.
        self.reusing = False

    def write(self, text: str) -> None:
        self.rendered.text.append(text)
        if self.filename is None or not text.strip():
            return
        frame = sys._getframe(1)
        innermost = None
        lines = set()
        while frame is not None:
            if frame.f_code.co_filename == self.filename:
                lines.add(frame.f_lineno)
                innermost = innermost or frame.f_lineno
            frame = frame.f_back
        self.statements.append(Emitted(text, innermost or 1, frozenset(lines), self.existing_types))

    def flush(self) -> None:
        pass


@functools.cache
def _lenient_compiler(base: type) -> type:
    from sqlalchemy import literal
    from sqlalchemy.types import NullType

    class LenientCompiler(base):
        """Renders a literal of unknown SQL type from its Python value, as the driver would send it."""

        def render_literal_value(self, value, type_):
            if isinstance(type_, NullType) and value is not None:
                type_ = literal(value).type
            return super().render_literal_value(value, type_)

    return LenientCompiler


def _prepare_offline(context: Any, recorder: _Recorder) -> None:
    """Give Alembic's offline MigrationContext the result stand-in, the lenient compiler and `existing_type` notes."""
    from sqlalchemy.engine.mock import MockConnection
    from sqlalchemy.exc import ObjectNotExecutableError
    from sqlalchemy.types import to_instance

    dialect = context.dialect
    dialect.statement_compiler = _lenient_compiler(type(dialect).statement_compiler)

    def execute(statement: Any, parameters: Any = None) -> _OfflineResult:
        if isinstance(statement, str):
            raise ObjectNotExecutableError(statement)  # as a SQLAlchemy 2 connection does: wrap it in text()
        for params in parameters if isinstance(parameters, (list, tuple)) else [parameters]:
            context.execute(statement.params(params) if params else statement)
        return _OfflineResult(statement)

    context.connection = context.impl.connection = MockConnection(dialect, execute)

    exec_ = context.impl._exec

    def exec_unless_reusing(construct: Any, *args: Any, **kw: Any) -> Any:
        return None if recorder.reusing else exec_(construct, *args, **kw)

    context.impl._exec = exec_unless_reusing

    alter_column = context.impl.alter_column

    def noting_existing_type(table_name: str, column_name: str, *args: Any, existing_type: Any = None, **kw: Any):
        recorder.existing_types = {}
        if existing_type is not None and kw.get("type_") is not None:
            recorder.existing_types = {column_name: str(to_instance(existing_type).compile(dialect=dialect))}
        try:
            return alter_column(table_name, column_name, *args, existing_type=existing_type, **kw)
        finally:
            recorder.existing_types = {}

    context.impl.alter_column = noting_existing_type


def _is_offline_only(exc: BaseException) -> bool:
    """True when `exc` comes from rendering without a database, not from the migration itself."""
    from sqlalchemy.exc import CompileError, NoInspectionAvailable

    if isinstance(exc, (NeedsDatabase, NoInspectionAvailable)) or "MockConnection" in str(exc):
        return True
    return isinstance(exc, CompileError) and any(
        text in str(exc) for text in ("literal value renderer", "renderable value"))


def _removed_in_sqlalchemy_2(exc: BaseException) -> bool:
    from sqlalchemy.exc import ArgumentError, ObjectNotExecutableError

    if isinstance(exc, ObjectNotExecutableError):
        return True
    if isinstance(exc, (AttributeError, ImportError)) and "sqlalchemy" in str(exc):
        return True
    return isinstance(exc, ArgumentError) and "Did you mean" in str(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NeedsDatabase):
        return str(exc)
    text = " ".join(str(exc).split()) if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if _removed_in_sqlalchemy_2(exc):
        reason += " (an API SQLAlchemy 2.0 removed)"
    return reason


def _failing_line(exc: BaseException, filename: str) -> int:
    if isinstance(exc, SyntaxError) and exc.filename and os.path.realpath(exc.filename) == os.path.realpath(filename):
        return exc.lineno or 1
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
    return lines[-1] if lines and lines[-1] else 1


def _broken_module(migration: MigrationFile, error: BaseException) -> types.ModuleType:
    """Stands in for a migration file that cannot be imported: the chain still links, running it re-raises."""
    module = types.ModuleType(Path(migration.path).stem)
    module.__file__ = str(migration.path)
    module.revision = migration.revision
    downs = migration.down_revisions
    module.down_revision = downs[0] if len(downs) == 1 else (downs or None)
    module.branch_labels = module.depends_on = None

    def fail() -> None:
        raise error

    module.upgrade = module.downgrade = fail
    return module


def _stand_in(path: str, script: dict[str, Any]) -> types.ModuleType:
    """Stands in for a migration whose render is reused: Alembic links it into the chain, nothing runs it."""
    module = types.ModuleType(Path(path).stem, script["__doc__"])
    module.__file__ = path
    for name in SCRIPT_ATTRIBUTES[:-1]:
        value = script[name]
        setattr(module, name, tuple(value) if isinstance(value, list) else value)

    def not_run() -> None:
        raise AssertionError(f"{path}: a stand-in for a reused render was run")

    module.upgrade = module.downgrade = not_run
    return module


class _WholeChainNeeded(Exception):
    """A changed migration's module says other revisions than its file's syntax did (`_LineRender`)."""


class _LineRender:
    """Rendering only the changed migrations of a straight chain (each migration follows the one before it, nothing
    depends_on another), as `alembic upgrade A:B --sql` renders a range: Alembic links the changed migrations
    and, as bases, the unchanged ones they follow, instead of a stand-in for each of the chain's files and a step
    for each reused render. On a straight chain, the order the whole chain runs in is the chain's own
    (`chain.read_chain`): the reused renders are placed where the whole chain's run would have met them. A
    changed module whose revisions are not the ones its syntax said makes the whole chain run after all."""

    def __init__(self, changed: list[MigrationFile], followed: dict[str, tuple[str, dict[str, Any]]]):
        self.changed = changed  # in chain order
        self.followed = followed  # revision -> (path, script attributes) of a reused migration a changed one follows
        self.whole_chain_needed = False

    @classmethod
    def of(cls, migrations: list[MigrationFile], reused: dict[str, MigrationRender]) -> _LineRender | None:
        """For `migrations` (chain order) when they form a straight chain and each one whose render is not
        reused is linked from what Alembic read of the others (their script attributes); else None."""
        if not reused:
            return None
        previous: tuple[str, ...] = ()
        for migration in migrations:
            known = reused.get(migration.key)
            if migration.revision is None or migration.down_revisions != previous or \
                    (known is not None and not _script_says(known.script, migration)):
                return None
            previous = (migration.revision,)
        if len({m.revision for m in migrations}) != len(migrations):
            return None
        changed = [m for m in migrations if m.key not in reused]
        by_revision = {m.revision: m for m in migrations}
        followed = {}
        for migration in changed:
            for down in migration.down_revisions:
                if by_revision[down].key in reused:
                    followed[down] = (by_revision[down].key, reused[by_revision[down].key].script)
        return cls(changed, followed)

    def starting_revisions(self) -> list[str] | None:
        return list(self.followed) or None

    def revision_map(self, script: Any) -> Any:
        """Alembic's revision map of the changed migrations (imported as Alembic imports them, once env.py runs)
        and of the reused ones they follow, as bases."""
        from alembic.script import Script
        from alembic.script.revision import RevisionMap

        def scripts() -> Iterator[Any]:
            # In the order Alembic lists the files (`Layout.paths`).
            for migration in sorted(self.changed, key=lambda m: m.key.replace(os.sep, "\0")):
                found = Script._from_path(script, migration.key)
                if found is None or found.revision != migration.revision or found.dependencies or \
                        found._versioned_down_revisions != migration.down_revisions:
                    self.whole_chain_needed = True
                    raise _WholeChainNeeded(migration.key)
                yield found
            for revision, (path, attributes) in self.followed.items():
                base = {**attributes, "down_revision": None, "branch_labels": None, "depends_on": None}
                yield Script(_stand_in(path, base), revision, path)

        return RevisionMap(scripts)

    def steps(self, script: Any) -> list[Any]:
        from alembic.runtime.migration import MigrationStep

        return [MigrationStep.upgrade_from_script(script.revision_map, script.revision_map.get_revision(m.revision))
                for m in self.changed]


def _script_says(script: dict[str, Any] | None, migration: MigrationFile) -> bool:
    """Whether Alembic read of a module (`script_attributes`) the revisions its file's syntax says, and no
    depends_on."""
    if script is None or script["depends_on"] is not None:
        return False
    down = script["down_revision"]
    downs = () if down is None else (down,) if isinstance(down, str) else tuple(down)
    return script["revision"] == migration.revision and downs == migration.down_revisions


class _ImportWatch:
    """The user's own modules (helpers, enums, models) that migrations import while they load and run, the user's
    files they open for reading (a SQL file next to the migration) and the environment variables they read: these
    change a render as much as the migration's own content does (lint/cache.py keys every render on them).

    Noted per window (one migration loading, or running): modules first loaded in it, and modules it imports
    that were loaded before, with what was first loaded together with them; a module env.py loaded (before
    any migration) brings in everything env.py loaded, since what those import was not watched."""

    def __init__(self, migrations: set[str]):
        self.migrations = migrations
        self.files: set[str] = set()
        self.environ: set[str] = set()  # names of the environment variables read, set or not
        installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        self._installed = tuple(p + os.sep for p in installed)
        self._before_migrations: set[str] | None = None
        self._user_files_before_migrations: set[str] | None = None  # of `_before_migrations`, once asked for
        self._loaded_with: dict[str, set[str]] = {}
        self._users_by_path: dict[str, str | None] = {}  # os.path.realpath costs a few lstat calls each
        names = self.environ

        class NotingEnviron(type(os.environ)):  # type: ignore[misc]
            def __getitem__(self, key: str) -> str:  # get(), `in` and os.getenv() read through here
                names.add(key)
                return super().__getitem__(key)

        self._noting_environ = NotingEnviron

    def _user_file(self, name: str) -> str | None:
        """The file of module `name` when it is the user's code: not Python's, not an installed package's, not
        nilemig's (its version is in every key) and not a migration (each has its own key)."""
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path or name == "nilemig" or name.startswith("nilemig."):
            return None
        return self._users(path)

    def _users(self, path: str) -> str | None:
        """The real path of `path` when it is a file of the user's, not Python's, an installed package's or a
        migration's."""
        if path not in self._users_by_path:
            real = os.path.realpath(path)
            parts = real.split(os.sep)
            users = not (real.startswith(self._installed) or "site-packages" in parts or "dist-packages" in parts
                         or real in self.migrations)
            self._users_by_path[path] = real if users else None
        return self._users_by_path[path]

    @contextmanager
    def watching(self) -> Iterator[None]:
        if self._before_migrations is None:
            self._before_migrations = set(sys.modules)
        # Modules are added at the end of sys.modules: what a window loaded is what comes after its last one.
        last_before = next(reversed(sys.modules), None)
        named: set[str] = set()
        real_import = builtins.__import__

        def noting(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            module = real_import(name, globals, locals, fromlist, level)
            if level == 0:
                named.add(name)
                named.update(f"{name}.{item}" for item in fromlist or ())
            return module

        real_open = builtins.open

        def noting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, (str, bytes, os.PathLike)) and "r" in mode:
                read = self._users(os.fsdecode(file))
                if read is not None:
                    self.files.add(read)
            return real_open(file, mode, *args, **kwargs)

        environ_class = type(os.environ)
        builtins.__import__ = noting
        builtins.open = io.open = noting_open  # pathlib's Path.open calls io.open
        os.environ.__class__ = self._noting_environ
        try:
            yield
        finally:
            builtins.__import__ = real_import
            builtins.open = io.open = real_open
            os.environ.__class__ = environ_class
            # (Were the window's last module removed from sys.modules, every module counts as new: more files
            # in the key, never fewer.)
            new = set(itertools.takewhile(lambda module: module != last_before, reversed(sys.modules)))
            loaded = {f for f in map(self._user_file, new) if f}
            for name in new:
                self._loaded_with[name] = loaded
            for name in named - new:
                if self._user_file(name) is None:
                    continue
                if name in self._before_migrations:
                    if self._user_files_before_migrations is None:
                        self._user_files_before_migrations = {f for f in map(self._user_file, self._before_migrations)
                                                              if f}
                    loaded |= self._user_files_before_migrations
                else:
                    loaded |= self._loaded_with.get(name, set())
            self.files |= loaded


@contextmanager
def _tolerant_loading(migrations: dict[str, MigrationFile], rendered: Rendered,
                      reused: dict[str, MigrationRender], watch: _ImportWatch) -> Iterator[None]:
    """Alembic imports every migration to build the chain; one that cannot be imported must not stop the rest,
    and one whose render is reused is not imported at all (`_stand_in`). What a file prints as it is imported
    is noted under its name."""
    from alembic import util

    load = util.load_python_file

    def load_or_stand_in(directory: Any, filename: str) -> types.ModuleType:
        key = os.path.join(directory, filename)
        if key not in migrations:  # the keys are real paths; resolving every file costs on long chains
            key = os.path.realpath(key)
        known = reused.get(key)
        if known is not None and known.script is not None:
            return _stand_in(key, known.script)
        output = io.StringIO()
        try:
            # Alembic loads env.py through here too: what it imports is not a migration's.
            with redirect_stdout(output), redirect_stderr(output), \
                    watch.watching() if key in migrations else nullcontext():
                module = load(directory, filename)
        except Exception as exc:
            migration = migrations.get(key)
            if migration is None or migration.revision is None:
                raise
            return _broken_module(migration, exc)
        finally:
            if output.getvalue().strip():
                rendered.note_printed(key, output.getvalue())
        if key in migrations and (script := script_attributes(module)) is not None:
            rendered.scripts[key] = script
        return module

    util.load_python_file = load_or_stand_in
    try:
        yield
    finally:
        util.load_python_file = load


def _stop_comment(script: Any, stop: Stop, downgrade: bool) -> str:
    what = "downgrade()" if downgrade else "upgrade()"
    return (f"-- nilemig: {display_path(script.path)} ({script.revision}) could not be rendered past line "
            f"{stop.line}: {stop.reason}. What its {what} runs from that line on is missing here.\n\n")


def render(project: Project, migrations: list[MigrationFile], revision_range: str = "heads",
           downgrade: bool = False, known: dict[str, MigrationRender] | None = None,
           whole_chain: bool = False) -> Rendered:
    """Render `revision_range` (`FROM:TO` allowed) of the upgrade (or downgrade), every migration once.

    `migrations` are the project's files as `chain.read_chain` read them: a file Alembic cannot import
    takes part in the chain through what they say, and fails when run. `known`: upgrade renders of
    unchanged migrations by key, taken as they are instead of running those migrations again; on a straight
    chain only the others are linked and run (`_LineRender`), unless `whole_chain`."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    rendered = Rendered()
    recorder = _Recorder(rendered)
    reused = {} if downgrade or known is None else known
    starting, target = revision_range.split(":", 1) if ":" in revision_range else (None, revision_range)
    watch = _ImportWatch({m.key for m in migrations})

    def reuse(key: str, known: MigrationRender) -> None:
        rendered.order.append(key)
        rendered.statements[key] = known.statements
        if known.script is not None:
            rendered.scripts[key] = known.script
        if known.stop is not None:
            rendered.stops[key] = known.stop
        # It was imported again with the rest of the chain: what that printed is in `known` already.
        rendered.printed.pop(Path(key), None)
        rendered.note_printed(key, known.printed)

    # Only the changed migrations of a straight chain run (`_LineRender`): the reused ones are taken in their
    # places in the chain, as the whole chain's run would have met them.
    changed_only = _LineRender.of(migrations, reused) if not (downgrade or whole_chain) and revision_range == "heads" \
        else None
    before_changed = iter(m.key for m in migrations)

    def reuse_up_to(key: str | None) -> None:
        for earlier in before_changed:
            if earlier == key:
                return
            reuse(earlier, reused[earlier])

    def guard(step: Any) -> None:
        original = step.migration_fn
        # As Alembic imported it (a real path): what the migration's frames say, and the file's key.
        key = filename = str(step.revision.path)

        @functools.wraps(original)
        def guarded(*args: Any, **kwargs: Any) -> None:
            recorder.reusing = key in reused
            if recorder.reusing:
                reuse(key, reused[key])
                return
            if changed_only is not None:
                reuse_up_to(key)
            recorder.filename, recorder.statements = filename, []
            printed = io.StringIO()
            try:
                with redirect_stdout(printed), redirect_stderr(printed), watch.watching():
                    original(*args, **kwargs)
            except (Exception, NeedsDatabase) as exc:  # noqa: BLE001 - a failing migration stops only itself
                rendered.stops[key] = Stop(_failing_line(exc, filename), _is_offline_only(exc), _reason(exc))
            finally:
                recorder.filename = None
            if key in rendered.stops:
                recorder.write(_stop_comment(step.revision, rendered.stops[key], downgrade))
            rendered.order.append(key)
            rendered.statements[key] = recorder.statements
            rendered.note_printed(key, printed.getvalue())

        step.migration_fn = guarded

    def steps(heads: Any, context: Any) -> list[Any]:
        _prepare_offline(context, recorder)
        if changed_only is not None:
            found = changed_only.steps(script)
        else:
            found = script._downgrade_revs(target, heads) if downgrade else script._upgrade_revs(target, heads)
        for step in found:
            guard(step)
        return found

    config = alembic_config(project, output=recorder)
    env_printed = io.StringIO()
    with explain_errors(project):
        script = ScriptDirectory.from_config(config)
        if changed_only is not None:
            script.revision_map = changed_only.revision_map(script)
            starting = changed_only.starting_revisions()
        try:
            with redirect_stdout(env_printed), redirect_stderr(env_printed), \
                    _tolerant_loading({m.key: m for m in migrations}, rendered, reused, watch), \
                    EnvironmentContext(config, script, fn=steps, as_sql=True, starting_rev=starting,
                                       destination_rev=target):
                script.run_env()
        except _WholeChainNeeded:
            pass
    if changed_only is not None:
        if changed_only.whole_chain_needed:
            return render(project, migrations, known=known, whole_chain=True)
        reuse_up_to(None)
    rendered.note_printed(os.path.realpath(script.env_py_location), env_printed.getvalue())
    rendered.imports, rendered.environ = watch.files, watch.environ
    return rendered


@dataclass(frozen=True)
class Layout:
    """Where a project's migration files are, as alembic.ini says: enough to list them without Alembic."""

    folders: tuple[Path, ...]
    recursive: bool
    env_py: Path

    def paths(self) -> list[str]:
        """Every migration file in the folders, as real paths (strings: a check with nothing to do needs no Path)."""
        # Real paths, as Alembic names the files it imports: the key that matches its steps to our files.
        # Resolving each folder once, and only the files that are links, keeps this cheap for long chains.
        found: set[str] = set()

        def scan(folder: str) -> None:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                return
            for entry in entries:
                if entry.name.endswith(".py") and not entry.name.startswith(("__init__", ".#")) and entry.is_file():
                    found.add(os.path.realpath(entry.path) if entry.is_symlink() else entry.path)
                elif self.recursive and entry.is_dir(follow_symlinks=False):  # as Alembic's os.walk
                    scan(entry.path)

        for folder in self.folders:
            scan(os.path.realpath(folder))
        # Sorted as strings with the separator made the smallest character, which is Path's order: comparing
        # Paths costs ~10 times more on long chains.
        return sorted(found, key=lambda p: p.replace(os.sep, "\0"))


def migration_layout(project: Project) -> Layout:
    """The project's version locations and env.py, read through Alembic."""
    from alembic.script import ScriptDirectory
    from alembic.util import coerce_resource_to_filename

    config = alembic_config(project)
    require_script_location(project, config)
    with explain_errors(project):
        script = ScriptDirectory.from_config(config)
        locations = config.get_version_locations_list()
    folders = [Path(coerce_resource_to_filename(loc)) for loc in locations] if locations else \
        [Path(script.dir) / "versions"]
    return Layout(tuple(folders), bool(script.recursive_version_locations), Path(script.env_py_location).resolve())


def migration_paths(project: Project) -> list[Path]:
    """Every migration file of the project, from all its version locations, as real paths."""
    return [Path(p) for p in migration_layout(project).paths()]
