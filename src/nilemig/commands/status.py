"""`nilemig status` and `nilemig history`: where the database is, and what is left to apply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nilemig.core import alembic_config, current_heads, display_path, pending_scripts, script_directory

if TYPE_CHECKING:
    from nilemig.config import Database, Project


@dataclass
class Migration:
    revision: str
    message: str
    path: str
    applied: bool
    current: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Status:
    database: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: list[Migration]

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": [m.to_json() for m in self.pending],
            "up_to_date": self.up_to_date,
        }


def _migration(script, applied: bool, current: tuple[str, ...]) -> Migration:
    return Migration(script.revision, script.doc or "", display_path(script.path), applied,
                     script.revision in current)


def status(project: Project, database: Database) -> Status:
    scripts = script_directory(project, alembic_config(project))
    current = current_heads(database)
    pending = [_migration(s, False, current) for s in pending_scripts(scripts, current)]
    return Status(database.url.render_as_string(hide_password=True), current, tuple(scripts.get_heads()), pending)


def history(project: Project, database: Database) -> list[Migration]:
    """Every migration, newest first, each marked applied or not."""
    scripts = script_directory(project, alembic_config(project))
    current = current_heads(database)
    pending = {s.revision for s in pending_scripts(scripts, current)}
    return [_migration(s, s.revision not in pending, current) for s in scripts.walk_revisions()]
