"""`nilemig new "message"`: an empty migration to fill in by hand."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nilemig.core import (
    alembic_chatter_silenced,
    alembic_config,
    configure_formatter,
    explain_errors,
    script_directory,
)

if TYPE_CHECKING:
    from nilemig.config import Project


def new(project: Project, message: str) -> Path:
    from alembic import command

    config = alembic_config(project)
    configure_formatter(config)
    script_directory(project, config)
    with explain_errors(project), alembic_chatter_silenced():
        script = command.revision(config, message=message)
    return Path(script.path)
