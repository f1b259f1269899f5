"""`nilemig sql [RANGE]`: the SQL the migrations would run, rendered offline (no database needed)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from nilemig.core import alembic_config, explain_errors, script_directory
from nilemig.errors import UsageError

if TYPE_CHECKING:
    from nilemig.config import Project


def render_sql(project: Project, revision_range: str = "head", downgrade: bool = False) -> str:
    from alembic import command

    if revision_range.count(":") > 1:
        raise UsageError(f"RANGE {revision_range!r} has more than one ':': use a revision (head), or FROM:TO.")
    output = io.StringIO()
    config = alembic_config(project, output=output)
    script_directory(project, config)
    with explain_errors(project):
        (command.downgrade if downgrade else command.upgrade)(config, revision_range, sql=True)
    return output.getvalue()
