"""Helpers for a project's own test suite.

    # tests/test_migrations.py
    from nilemig.testing import assert_migrations_verify

    def test_migrations_verify():
        assert_migrations_verify("path/to/project")   # or scratch_url="postgresql://..."
"""

from __future__ import annotations

from pathlib import Path

from nilemig.config import find_project


def assert_migrations_verify(project_dir: str | Path = ".", scratch_url: str | None = None) -> None:
    """Run `nilemig verify` on the project; fail the test with every problem it finds."""
    from nilemig.commands.verify import verify

    result = verify(find_project(Path(project_dir)), scratch_url)
    if not result.ok:
        lines = [f"{f.kind} {f.revision or ''} {f.file or ''}: {f.message}" + "".join(f"\n    {d}" for d in f.details)
                 for f in result.failures]
        raise AssertionError("nilemig verify failed:\n" + "\n".join(lines))
