"""`nilemig new "message"`: an empty migration to fill in by hand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nilemig.core import alembic_config, explain_errors, script_directory

if TYPE_CHECKING:
    from nilemig.config import Project


def new(project: Project, message: str) -> Path:
    from alembic import command

    config = alembic_config(project)
    script_directory(project, config)
    with explain_errors(project):
        script = command.revision(config, message=message)
    return Path(script.path)
