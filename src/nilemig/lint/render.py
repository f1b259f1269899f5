"""Every migration's upgrade as SQL, rendered by Alembic's offline mode (no database),
each statement tagged with the migration file and line that emitted it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nilemig.core import alembic_config, failing_frame
from nilemig.lint.schema import Location

if TYPE_CHECKING:
    from nilemig.config import Project


@dataclass
class Emitted:
    sql: str
    location: Location
    lines: frozenset[int]  # every line of the migration file on the stack: where an ignore comment may sit


@dataclass
class Rendered:
    statements: list[Emitted] = field(default_factory=list)
    # Emitted.location.path -> os.path.realpath of it, computed once per file
    keys: dict[str, str] = field(default_factory=dict)
    # migrations that could not be rendered offline: (location, why)
    failures: list[tuple[Location, str]] = field(default_factory=list)


class _Recorder:
    """Stands in for Alembic's output buffer; notes which migration line wrote each chunk of SQL."""

    def __init__(self, files: set[str]):
        self.files = files
        self.statements: list[Emitted] = []
        self.current: str | None = None  # revision whose upgrade() ran last, for restarts after a failure

    def write(self, text: str) -> None:
        frame = sys._getframe(1)
        innermost = None
        lines = set()
        while frame is not None:
            filename = frame.f_code.co_filename
            if filename in self.files:
                lines.add(frame.f_lineno)
                if innermost is None:
                    innermost = Location(filename, frame.f_lineno)
            frame = frame.f_back
        if innermost is not None and text.strip():
            self.statements.append(Emitted(text, innermost, frozenset(lines)))

    def flush(self) -> None:
        pass


def render(project: Project, files: dict[str, str], revisions: dict[str, str]) -> Rendered:
    """Render `heads` from base; after a migration that cannot render offline, go on after it.

    `files` maps each migration's path, as Alembic will name it, to its key (real path);
    `revisions` maps a key to its revision, for restarting past a failed migration.
    """
    from alembic import command

    keys = {**files, **{key: key for key in files.values()}}
    recorder = _Recorder(set(keys))
    result = Rendered()
    start = None
    while True:
        config = alembic_config(project, output=recorder)
        try:
            command.upgrade(config, f"{start}:heads" if start else "heads", sql=True)
            break
        except Exception as exc:  # noqa: BLE001 - any failure is reported as a finding, then skipped
            frame = failing_frame(exc, project.root)
            key = keys.get(frame.filename) or os.path.realpath(frame.filename) if frame else None
            revision = revisions.get(key)
            if frame is None or revision is None or revision == start:
                raise
            result.failures.append((Location(frame.filename, frame.lineno), f"{type(exc).__name__}: {exc}"))
            # Drop what the failed migration emitted before failing; restart after it.
            recorder.statements = [s for s in recorder.statements if keys[s.location.path] != key]
            start = revision
    result.statements = recorder.statements
    result.keys = keys
    return result
