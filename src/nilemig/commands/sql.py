"""`nilemig sql [RANGE]`: the SQL the migrations would run, rendered offline (no database needed).

Every migration that can be rendered is; one that cannot is marked in the script by a SQL comment
with the reason, and named in `failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nilemig.core import explain_errors
from nilemig.errors import UsageError

if TYPE_CHECKING:
    from nilemig.config import Project


@dataclass
class RenderedSql:
    script: str
    failed: list[tuple[Path, int, str]]  # (migration, line, reason) of each migration not rendered in full
    printed: list[tuple[Path, str]]  # what migration code printed while rendering


def render_sql(project: Project, revision_range: str = "head", downgrade: bool = False) -> RenderedSql:
    from nilemig.lint.chain import read_chain
    from nilemig.lint.render import migration_paths, render

    if revision_range.count(":") > 1:
        raise UsageError(f"RANGE {revision_range!r} has more than one ':': use a revision (head), or FROM:TO.")
    if downgrade and ":" not in revision_range:
        raise UsageError(f"`nilemig sql --down` needs a range FROM:TO (e.g. head:base), not {revision_range!r}.")
    with explain_errors(project):
        chain = read_chain(migration_paths(project))
    rendered = render(project, chain.migrations, revision_range, downgrade)
    by_key = {m.key: m for m in chain.migrations}
    failed = [(by_key[key].path, stop.line, stop.reason) for key, stop in rendered.stops.items()]
    return RenderedSql("".join(rendered.text), failed, list(rendered.printed.items()))
