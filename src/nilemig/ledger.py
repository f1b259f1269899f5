"""The ledger: which migration files were applied, with their sha256, so edits after the fact show.

`nilemig_ledger` sits next to `alembic_version`. A row is written in the same transaction
as the migration it records, and removed when the migration is downgraded. A database
migrated before nilemig is baselined on first use: its applied migrations are recorded with
their files as they are then. A stamp (`nilemig stamp`, `alembic stamp`) records the revisions
it moves over as stamped: marked applied, never run.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig import __version__
from nilemig.database import INSUFFICIENT_PRIVILEGE, failure_reason, sqlstate
from nilemig.errors import NilemigError
from nilemig.keys import LEDGER_TABLE, STEPS_TABLE, VERSION_TABLE

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

TABLE = LEDGER_TABLE
CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    revision text PRIMARY KEY,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms integer,
    applied_by text,
    nilemig_version text,
    baseline boolean NOT NULL DEFAULT false,
    stamped boolean NOT NULL DEFAULT false
)
"""
# Ledgers made before `stamped` existed get it once; `presence_columns` checks the catalog first, so a
# run that finds it takes no table lock (and on Nile sends no distributed DDL).
_ADD_STAMPED = f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS stamped boolean NOT NULL DEFAULT false"
_UPSERT = f"""
INSERT INTO {TABLE} (revision, sha256, applied_at, duration_ms, applied_by, nilemig_version, baseline, stamped)
VALUES (:revision, :sha256, now(), :duration_ms, :applied_by, :version, :baseline, :stamped)
ON CONFLICT (revision) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = EXCLUDED.applied_at,
    duration_ms = EXCLUDED.duration_ms, applied_by = EXCLUDED.applied_by,
    nilemig_version = EXCLUDED.nilemig_version, baseline = EXCLUDED.baseline, stamped = EXCLUDED.stamped
"""
# How a recorded migration reached the database, for `status` and `history`.
APPLIED, BASELINE, STAMPED = "applied", "baseline", "stamped"


def missing_privilege(exc: BaseException, user: str | None) -> NilemigError | None:
    """For a permission error on nilemig's own objects (its ledger, Alembic's version table, or the schema
    they are created in): which privilege is missing and how to grant it. None for any other error."""
    if sqlstate(exc) != INSUFFICIENT_PRIVILEGE:
        return None
    reason = failure_reason(exc)
    denied = re.search(r'permission denied for (schema|table|relation) "?([\w$]+)"?', reason)
    if denied is None:
        return None
    kind, name = denied.groups()
    grantee = user or "YOUR_USER"
    if kind == "schema":
        needs = (f"the CREATE privilege on schema {name}, to create nilemig's table {TABLE} and Alembic's "
                 f"{VERSION_TABLE} there. As the schema's owner (or an admin), run: GRANT CREATE ON SCHEMA {name} "
                 f"TO {grantee}; or run `nilemig up` once as a user who may create them.")
    elif name in (TABLE, VERSION_TABLE):
        needs = (f"to read and write {name}. As its owner (or an admin), run: "
                 f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {grantee};")
    else:
        return None
    return NilemigError(f"The database refused: {reason}. The user {grantee} needs {needs}")


@contextmanager
def privileges_explained(connection: Connection) -> Iterator[None]:
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        from nilemig.config import url_user

        denied = missing_privilege(exc, url_user(connection.engine.url))
        if denied is None:
            raise
        raise denied from None


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@functools.cache
def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (a container without one) is not an error
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _text(sql: str):
    from sqlalchemy import text

    return text(sql)


def exists(connection: Connection) -> bool:
    return connection.execute(_text(f"SELECT to_regclass('{TABLE}') IS NOT NULL")).scalar()


def record(connection: Connection, revision: str, path: str, seconds: float | None, how: str = APPLIED) -> None:
    """Record a migration as applied (with its duration), baselined or stamped (neither ran it here)."""
    connection.execute(_text(_UPSERT), _row(revision, path, seconds, how))


def _row(revision: str, path: str, seconds: float | None, how: str) -> dict[str, Any]:
    return {"revision": revision, "sha256": file_sha256(path),
            "duration_ms": None if seconds is None else round(seconds * 1000),
            "applied_by": _who(), "version": __version__, "baseline": how == BASELINE, "stamped": how == STAMPED}


_FORGET = f"DELETE FROM {TABLE} WHERE revision = :revision"


def forget(connection: Connection, revision: str) -> None:
    connection.execute(_text(_FORGET), {"revision": revision})


@dataclass
class State:
    """What a run needs to know of the database, read in one or two round trips (see `read_state`)."""

    current: tuple[str, ...]  # Alembic's current revision(s)
    recorded: dict[str, tuple[str, str]] | None  # revision -> (sha256, how applied); None without a ledger
    has_version_table: bool = True
    ledger_current: bool = True  # the ledger has every column this nilemig writes (`stamped`)
    has_steps: bool = False  # for_each_tenant has recorded steps here (whose progress tenants.py reads)

    @property
    def how_applied(self) -> dict[str, str]:
        """revision -> APPLIED, BASELINE or STAMPED for every recorded migration; empty without a ledger."""
        return {revision: how for revision, (_, how) in (self.recorded or {}).items()}


def presence_columns(version_table: str = VERSION_TABLE, schema: str | None = None) -> str:
    """SQL columns saying whether Alembic's version table, the ledger and its `stamped` column, and
    for_each_tenant's steps table exist, for `read_state`; a caller puts them in a statement it sends
    anyway (the lock's), saving a round trip."""
    qualified = _qualified(version_table, schema)
    return (f"to_regclass('{qualified}') IS NOT NULL, to_regclass('{TABLE}') IS NOT NULL, "
            f"EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('{TABLE}') AND attname = 'stamped' "
            f"AND NOT attisdropped), to_regclass('{STEPS_TABLE}') IS NOT NULL")


def _qualified(version_table: str, schema: str | None) -> str:
    name = f'"{version_table}"' if not version_table.islower() else version_table
    return f"{schema}.{name}" if schema else name


def read_state(connection: Connection, presence: tuple[bool, bool, bool, bool] | None = None,
               version_table: str = VERSION_TABLE, schema: str | None = None) -> State:
    """The current revision(s) and every ledger row in one query; `presence` is what `presence_columns`
    returned (read here when not given)."""
    if presence is None:
        presence = tuple(connection.execute(_text(f"SELECT {presence_columns(version_table, schema)}")).one())
    has_version_table, has_ledger, has_stamped, has_steps = presence
    parts = []
    if has_version_table:
        parts.append("SELECT true, version_num::text, NULL::text, NULL::boolean, NULL::boolean "
                     f"FROM {_qualified(version_table, schema)}")
    if has_ledger:
        # A ledger from before stamps existed has no `stamped` column until the next run adds it.
        parts.append(f"SELECT false, revision, sha256, baseline, {'stamped' if has_stamped else 'false'} FROM {TABLE}")
    found = connection.execute(_text(" UNION ALL ".join(parts))).all() if parts else []
    current = tuple(revision for is_version, revision, *_ in found if is_version)
    recorded = {revision: (sha, STAMPED if stamped else BASELINE if baseline else APPLIED)
                for is_version, revision, sha, baseline, stamped in found if not is_version}
    return State(current, recorded if has_ledger else None, has_version_table, has_ledger and has_stamped, has_steps)


def ensure(connection: Connection, scripts: ScriptDirectory, state: State,
           create_version_table: Callable[[], None] | None = None) -> int:
    """Create (or bring up to date) the ledger and record applied migrations it lacks; return how many it
    baselined. Writes only when something is missing (the caller commits): a run on an up-to-date database
    sends nothing here. `create_version_table` makes Alembic's version table when it is missing."""
    recorded = set(state.recorded or ())
    # Migrations reach the ledger with their revision, so when the current ones are recorded their
    # ancestors are too; walking the whole chain is only needed the first time.
    unrecorded = not set(state.current) <= recorded
    missing_version_table = create_version_table is not None and not state.has_version_table
    if state.ledger_current and not unrecorded and not missing_version_table:
        return 0
    missing = [s for s in scripts.iterate_revisions(state.current, "base") if s.revision not in recorded] \
        if unrecorded else []
    with privileges_explained(connection):
        if state.recorded is None:
            connection.execute(_text(CREATE))
        elif not state.ledger_current:
            connection.execute(_text(_ADD_STAMPED))
        if missing_version_table:
            create_version_table()
        for script in missing:
            record(connection, script.revision, script.path, None, BASELINE)
    state.recorded = {**(state.recorded or {}), **{s.revision: (file_sha256(s.path), BASELINE) for s in missing}}
    state.has_version_table = state.has_version_table or missing_version_table
    state.ledger_current = True
    return len(missing)


class Recorder:
    """Writes each migration Alembic runs to the ledger, inside that migration's transaction.

    `watch` makes the write ride on Alembic's own version-table statement for the step (as a data-modifying
    WITH clause in front of it): one round trip per migration fewer, which on a remote database is most of
    what the ledger costs. As Alembic's on_version_apply callback, it writes what did not ride along (stamps,
    or a statement it could not extend) and notes where the run left the database.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.heads: tuple[str, ...] | None = None  # the current revision(s) after the last step; None before
        self._step: Any = None  # the migration step running now, until its ledger write is sent
        self._version_table: Any = None
        self._compiled: dict[str, str] = {}  # ledger SQL -> as the driver takes it

    def watch(self, migration_context: Any) -> None:
        from alembic.runtime.migration import RevisionStep
        from sqlalchemy import event

        self._version_table = migration_context._version
        self.last = time.monotonic()
        steps_of = migration_context._migrations_fn

        def steps(heads: Any, context: Any) -> Iterator[Any]:
            for step in steps_of(heads, context):
                self._step = step if isinstance(step, RevisionStep) else None
                yield step

        # Alembic has no public hook before a step's version update: note each step as its function yields it.
        migration_context._migrations_fn = steps
        event.listen(migration_context.connection, "before_cursor_execute", self._ride_along, retval=True)

    def _ride_along(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                    executemany: bool) -> tuple[str, Any]:
        compiled = getattr(context, "compiled", None)
        target = getattr(getattr(compiled, "statement", None), "table", None)
        # Alembic's version statements carry their values inline; anything else is left as it is.
        if (self._step is None or target is not self._version_table or executemany or parameters
                or "%" in statement):
            return statement, parameters
        step, self._step = self._step, None
        if step.is_upgrade:
            now = time.monotonic()
            sql, values = _UPSERT, _row(step.revision.revision, step.revision.path, now - self.last, APPLIED)
            self.last = now
        else:
            sql, values = _FORGET, {"revision": step.revision.revision}
        if sql not in self._compiled:  # once per run: compiling costs more than the statement's round trip here
            self._compiled[sql] = str(_text(sql.strip()).compile(dialect=conn.dialect))
        return f"WITH nilemig_ledger_write AS ({self._compiled[sql]}) {statement}", values

    def __call__(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        self.heads = tuple(sorted(heads))
        if self._step is None and not step.is_stamp:
            return  # written with the version update
        self._step = None
        now = time.monotonic()
        with privileges_explained(ctx.connection):
            if step.is_stamp:
                # One stamp step can move over several revisions (`stamp head` from base): each is marked,
                # none with a duration, since none ran.
                moved = step.revision_map.iterate_revisions(step.up_revision_ids, step.down_revision_ids or "base")
                for script in list(moved):
                    if step.is_upgrade:
                        record(ctx.connection, script.revision, script.path, None, STAMPED)
                    else:
                        forget(ctx.connection, script.revision)
            elif step.is_upgrade:
                record(ctx.connection, step.up_revision_id, step.up_revision.path, now - self.last)
            else:
                forget(ctx.connection, step.up_revision_id)
        self.last = now


@dataclass
class Drift:
    """Applied migrations whose file changed since, and applied revisions no file has."""

    edited: list[tuple[str, str]] = field(default_factory=list)  # (revision, path)
    missing: list[str] = field(default_factory=list)
    has_ledger: bool = True
    stamped: list[str] = field(default_factory=list)  # marked applied by a stamp: they never ran here

    def to_json(self) -> dict[str, Any]:
        return {"ledger": self.has_ledger, "edited": [{"revision": r, "file": p} for r, p in self.edited],
                "missing": self.missing, "stamped": self.stamped}


def drift(state: State, scripts: ScriptDirectory) -> Drift:
    recorded, current = state.recorded, state.current
    if recorded is None:
        return Drift(has_ledger=False, missing=[r for r in current if _script(scripts, r) is None])
    found = Drift(stamped=sorted(r for r, (_, how) in recorded.items() if how == STAMPED))
    for revision, (sha, _) in sorted(recorded.items()):
        script = _script(scripts, revision)
        if script is None:
            found.missing.append(revision)
        elif file_sha256(script.path) != sha:
            found.edited.append((revision, script.path))
    found.missing += [r for r in current if r not in recorded and _script(scripts, r) is None]
    return found


def _script(scripts: ScriptDirectory, revision: str):
    try:
        return scripts.get_revision(revision)
    except Exception:  # noqa: BLE001 - Alembic raises several kinds for an unknown revision
        return None


def accept(connection: Connection, scripts: ScriptDirectory, revisions: list[str]) -> list[str]:
    """Take the current files of these (or all edited) applied migrations as reviewed."""
    state = read_state(connection)
    chosen = revisions or [r for r, _ in drift(state, scripts).edited]
    recorded = state.recorded or {}
    accepted = []
    for revision in chosen:
        script = _script(scripts, revision)
        if revision in recorded and script is not None:
            connection.execute(_text(f"UPDATE {TABLE} SET sha256 = :sha WHERE revision = :revision"),
                               {"sha": file_sha256(script.path), "revision": revision})
            accepted.append(revision)
    return accepted
