"""`nilemig status` and `nilemig history`: where the database is, and what is left to apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nilemig.config import display_url
from nilemig.core import (
    alembic_config,
    database_state,
    display_path,
    foreign_env_py,
    pending_scripts,
    script_directory,
)

if TYPE_CHECKING:
    from nilemig.config import Database, Project
    from nilemig.ledger import Drift
    from nilemig.tenants import StepState


@dataclass
class Migration:
    revision: str
    message: str
    path: str
    applied: bool
    current: bool
    how: str | None = None  # ledger.APPLIED, BASELINE or STAMPED when the ledger knows; None when pending
    incomplete: list[str] = field(default_factory=list)  # its for_each_tenant steps not done yet


    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Status:
    database: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: list[Migration]
    drift: Drift
    ledger_kept: bool = True  # False when the project's env.py is not nilemig's: nothing records migrations
    steps: list[StepState] = field(default_factory=list)  # for_each_tenant steps not complete

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.drift.missing and not self.steps

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": [m.to_json() for m in self.pending],
            "up_to_date": self.up_to_date,
            "ledger": {**self.drift.to_json(), "kept": self.ledger_kept},
            "steps": [s.to_json() for s in self.steps],
        }


def _migration(script, applied: bool, current: tuple[str, ...], how: str | None = None) -> Migration:
    return Migration(script.revision, script.doc or "", display_path(script.path), applied,
                     script.revision in current, how if applied else None)


def status(project: Project, database: Database) -> Status:
    from nilemig.tenants import states

    scripts = script_directory(project, alembic_config(project))
    state, drift = database_state(database, scripts)
    current = state.current
    pending = [] if drift.missing else [_migration(s, False, current) for s in pending_scripts(scripts, current)]
    return Status(display_url(database.url), current, tuple(scripts.get_heads()), pending,
                  drift, foreign_env_py(project, scripts) is None, states(database) if state.has_steps else [])


def rebaseline(project: Project, database: Database, revisions: list[str]) -> list[str]:
    """Accept the current files of edited applied migrations (all, or those named) as reviewed."""
    from nilemig import ledger
    from nilemig.database import connect
    from nilemig.errors import NilemigError

    scripts = script_directory(project, alembic_config(project))
    with connect(database) as connection:
        if not ledger.exists(connection):
            raise NilemigError(f"There is no {ledger.TABLE} in this database yet: `nilemig up` creates it.")
        accepted = ledger.accept(connection, scripts, revisions)
        connection.commit()
    unknown = sorted(set(revisions) - set(accepted))
    if unknown:
        raise NilemigError(f"Not applied here, or no such migration: {', '.join(unknown)}. "
                           f"Accepted: {', '.join(accepted) or 'none'}.")
    return accepted


def history(project: Project, database: Database) -> list[Migration]:
    """Every migration, newest first, each marked applied or not, and with its incomplete steps."""
    from nilemig import ledger
    from nilemig.commands.migrate import refuse_drift
    from nilemig.tenants import states

    scripts = script_directory(project, alembic_config(project))
    state, drift = database_state(database, scripts)
    refuse_drift(drift, allow_edited=True)
    current, how = state.current, state.how_applied
    pending = {s.revision for s in pending_scripts(scripts, current)}
    migrations = [_migration(s, s.revision not in pending, current, how.get(s.revision, ledger.APPLIED))
                  for s in scripts.walk_revisions()]
    by_revision = {m.revision: m for m in migrations}
    for step in states(database) if state.has_steps else []:
        if step.step.revision in by_revision:
            by_revision[step.step.revision].incomplete.append(step.describe())
    return migrations
