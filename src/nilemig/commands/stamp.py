"""`nilemig stamp`: move the database's recorded revision without running any migration.

Through nilemig's env.py the stamp takes the migration lock, and the ledger marks the
revisions it moves over as stamped (never as applied with a duration), so `status` and
`history` can tell them from migrations that ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nilemig.commands.migrate import Step, steps_between
from nilemig.core import alembic_config, current_heads, explain_errors, script_directory
from nilemig.keys import FINAL_HEADS_KEY, SETTINGS_KEY

if TYPE_CHECKING:
    from nilemig.config import Database, Project
    from nilemig.runsettings import RunSettings


@dataclass
class StampResult:
    before: tuple[str, ...]
    after: tuple[str, ...]
    moved: list[Step]  # in the order a real run would have applied (or undone) them; none ran
    upward: bool  # marked applied (True) or no longer applied (False)


def stamp(project: Project, database: Database, revision: str, settings: RunSettings | None = None) -> StampResult:
    from alembic import command

    scripts = script_directory(project, alembic_config(project))
    before = current_heads(database)
    config = alembic_config(project, database)
    if settings is not None:
        config.attributes[SETTINGS_KEY] = settings
    with explain_errors(project):
        command.stamp(config, revision)
    after = config.attributes[FINAL_HEADS_KEY] if FINAL_HEADS_KEY in config.attributes else current_heads(database)
    moved = steps_between(scripts, before, after)
    upward = bool(moved) and moved[-1].revision in after
    return StampResult(before, after, moved, upward)
