"""Helpers to build a project from migration bodies, as the rules' examples are written."""

from __future__ import annotations

from pathlib import Path

from nilemig.commands.init import init
from nilemig.config import Project
from nilemig.lint.engine import CheckResult, check
from nilemig.lint.rules import NEXT

HEADER = '''"""{message}"""
from alembic import op
import sqlalchemy as sa

revision = "{revision}"
'''


def write_chain(root: Path, example: str) -> list[Path]:
    """One migration file per chunk of `example`, each following the previous one."""
    paths = []
    previous = None
    for number, chunk in enumerate(example.split(NEXT), start=1):
        revision = f"{number:04d}"
        text = HEADER.format(message=f"example {number}", revision=revision)
        if "down_revision" not in chunk:
            text += f"down_revision = {previous!r}\n"
        text += "\n\n" + chunk.strip("\n") + "\n"
        path = root / "alembic" / "versions" / f"{revision}_example_{number}.py"
        path.write_text(text)
        paths.append(path)
        previous = revision
    return paths


def check_example(root: Path, example: str) -> CheckResult:
    init(root)
    write_chain(root, example)
    return check(Project(root))


def codes(result: CheckResult) -> set[str]:
    return {f.code for f in result.findings}
