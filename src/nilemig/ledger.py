"""The ledger: which migration files were applied, with their sha256, so edits after the fact show.

`nilemig_ledger` sits next to `alembic_version`. A row is written in the same transaction
as the migration it records, and removed when the migration is downgraded. A database
migrated before nilemig is baselined on first use: its applied migrations are recorded with
their files as they are then.
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig import __version__
from nilemig.database import INSUFFICIENT_PRIVILEGE, failure_reason, sqlstate
from nilemig.errors import NilemigError
from nilemig.keys import LEDGER_TABLE, VERSION_TABLE

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
    baseline boolean NOT NULL DEFAULT false
)
"""
_UPSERT = f"""
INSERT INTO {TABLE} (revision, sha256, applied_at, duration_ms, applied_by, nilemig_version, baseline)
VALUES (:revision, :sha256, now(), :duration_ms, :applied_by, :version, :baseline)
ON CONFLICT (revision) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = EXCLUDED.applied_at,
    duration_ms = EXCLUDED.duration_ms, applied_by = EXCLUDED.applied_by,
    nilemig_version = EXCLUDED.nilemig_version, baseline = EXCLUDED.baseline
"""


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


def record(connection: Connection, revision: str, path: str, seconds: float | None, baseline: bool = False) -> None:
    connection.execute(_text(_UPSERT), {
        "revision": revision, "sha256": file_sha256(path),
        "duration_ms": None if seconds is None else round(seconds * 1000),
        "applied_by": _who(), "version": __version__, "baseline": baseline,
    })


def forget(connection: Connection, revision: str) -> None:
    connection.execute(_text(f"DELETE FROM {TABLE} WHERE revision = :revision"), {"revision": revision})


def rows(connection: Connection) -> dict[str, str] | None:
    """revision -> sha256 of every recorded migration; None when there is no ledger yet."""
    if not exists(connection):
        return None
    return dict(connection.execute(_text(f"SELECT revision, sha256 FROM {TABLE}")).all())


def ensure(connection: Connection, scripts: ScriptDirectory, current: tuple[str, ...]) -> int:
    """Create the ledger if needed and record applied migrations it lacks; return how many it baselined."""
    with privileges_explained(connection):
        connection.execute(_text(CREATE))
        recorded = set(rows(connection))
    # Migrations reach the ledger with their revision, so when the current ones are recorded their
    # ancestors are too; walking the whole chain is only needed the first time.
    if set(current) <= recorded:
        return 0
    applied = list(scripts.iterate_revisions(current, "base"))
    missing = [s for s in applied if s.revision not in recorded]
    with privileges_explained(connection):
        for script in missing:
            record(connection, script.revision, script.path, None, baseline=True)
    return len(missing)


class Recorder:
    """Alembic's on_version_apply callback that writes each step to the ledger, inside its transaction."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def __call__(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        now = time.monotonic()
        with privileges_explained(ctx.connection):
            if step.is_upgrade:
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

    def to_json(self) -> dict[str, Any]:
        return {"ledger": self.has_ledger, "edited": [{"revision": r, "file": p} for r, p in self.edited],
                "missing": self.missing}


def drift(connection: Connection, scripts: ScriptDirectory, current: tuple[str, ...]) -> Drift:
    recorded = rows(connection)
    if recorded is None:
        return Drift(has_ledger=False, missing=[r for r in current if _script(scripts, r) is None])
    found = Drift()
    for revision, sha in sorted(recorded.items()):
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
    chosen = revisions or [r for r, _ in drift(connection, scripts, ()).edited]
    recorded = rows(connection) or {}
    accepted = []
    for revision in chosen:
        script = _script(scripts, revision)
        if revision in recorded and script is not None:
            connection.execute(_text(f"UPDATE {TABLE} SET sha256 = :sha WHERE revision = :revision"),
                               {"sha": file_sha256(script.path), "revision": revision})
            accepted.append(revision)
    return accepted
