"""`nilemig check` and `nilemig rules`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint.cache import CheckCache
    from nilemig.lint.engine import CheckResult, Finding
    from nilemig.lint.registry import Rule


# The command line asks `foreign_env_py` and then `run_check` about the same Project: the cache the first opens
# serves the second (the packages' versions read and alembic.ini hashed once per check). Handed over once.
_opened: list[tuple[Project, CheckCache]] = []


def run_check(project: Project, only: set[Path] | None = None, with_squawk: bool | None = None,
              use_cache: bool = True) -> CheckResult:
    from nilemig.lint.engine import check

    opened = [cache for known, cache in _opened if known is project]
    _opened.clear()
    return check(project, only, with_squawk, use_cache, opened[0] if opened and use_cache else None)


def foreign_env_py(project: Project, use_cache: bool = True) -> Path | None:
    """`core.foreign_env_py`; with `use_cache`, from check's cache while alembic.ini and env.py are unchanged,
    so that a check where nothing changed does not load Alembic at all."""
    _opened.clear()
    if not use_cache:
        from nilemig.core import foreign_env_py as read

        return read(project)
    from nilemig.lint.cache import CheckCache

    cache = CheckCache(project)
    cache.layout()
    _opened.append((project, cache))
    return cache.foreign_env_py()


def repository_root() -> Path:
    """Where GitHub resolves annotation paths from: GITHUB_WORKSPACE, else the git top level, else the current
    directory."""
    here = Path.cwd().resolve()
    if os.environ.get("GITHUB_WORKSPACE"):
        return Path(os.environ["GITHUB_WORKSPACE"]).resolve()
    # A .git file (worktree, submodule) marks a top level as well as a .git folder does.
    return next((d for d in (here, *here.parents) if (d / ".git").exists()), here)


def _escape_message(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_message(text).replace(":", "%3A").replace(",", "%2C")


def github_annotations(findings: list[Finding]) -> str:
    """GitHub Actions workflow commands: one annotation per finding, its file relative to the repository root."""
    root = repository_root()

    def relative(path: Path) -> str:
        resolved = Path(path).resolve()
        return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else resolved.as_posix()

    return "".join(
        f"::{f.severity} file={_escape_property(relative(f.path))},line={f.line},title={_escape_property(f.code)}"
        f"::{_escape_message(f.message)}\n"
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
