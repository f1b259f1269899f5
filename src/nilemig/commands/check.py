"""`nilemig check` and `nilemig rules`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint.engine import CheckResult, Finding
    from nilemig.lint.registry import Rule


def run_check(project: Project, only: set[Path] | None = None, with_squawk: bool | None = None) -> CheckResult:
    from nilemig.lint.engine import check

    return check(project, only, with_squawk)


def github_annotations(findings: list[Finding]) -> str:
    """GitHub Actions workflow commands: one annotation per finding."""
    from nilemig.core import display_path

    def escape(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return "".join(
        f"::{f.severity} file={display_path(f.path)},line={f.line},title={f.code}::{escape(f.message)}\n"
        for f in findings
    )


def rules() -> list[Rule]:
    from nilemig.lint import rules as _  # noqa: F401 - registers the rules
    from nilemig.lint.registry import RULES

    return sorted(RULES.values(), key=lambda r: r.code)


def rule(code: str) -> Rule:
    from nilemig.errors import UsageError
    from nilemig.lint.registry import RULES

    rules()
    found = RULES.get(code.upper())
    if found is None:
        raise UsageError(f"No rule {code!r}. `nilemig rules` lists them all.")
    return found
