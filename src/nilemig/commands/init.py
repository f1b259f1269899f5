"""`nilemig init`: lay out a plain Alembic project wired for Nile. Never overwrites a file."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

GITIGNORE_LINES = (".env", ".nilemig/")


ENV_PY_MARKER = "nilemig.alembic_env"


@dataclass
class InitResult:
    root: Path
    created: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    gitignore_added: list[str] = field(default_factory=list)
    foreign_env_py: bool = False  # an env.py that does not call nilemig was already there


def _template_files(name: str) -> dict[str, str]:
    """Relative path -> text of every file under templates/<name>."""
    base = resources.files("nilemig").joinpath("templates", name)
    found: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                found[rel] = child.read_text(encoding="utf-8")

    walk(base, "")
    return found


def init(root: Path, example: bool = False) -> InitResult:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    files = _template_files("project")
    if example:
        files.update(_template_files("example"))
    result = InitResult(root)
    (root / "alembic" / "versions").mkdir(parents=True, exist_ok=True)
    for rel, text in sorted(files.items()):
        target = root / rel
        if target.exists():
            result.existing.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        result.created.append(target)
    result.gitignore_added = _ensure_gitignore(root / ".gitignore")
    env_py = root / "alembic" / "env.py"
    result.foreign_env_py = env_py in result.existing and ENV_PY_MARKER not in env_py.read_text(encoding="utf-8")
    return result


def _ensure_gitignore(path: Path) -> list[str]:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    missing = [line for line in GITIGNORE_LINES if line not in existing.splitlines()]
    if missing:
        with path.open("a", encoding="utf-8") as out:
            if existing and not existing.endswith("\n"):
                out.write("\n")
            out.write("# nilemig: secrets and the local development database\n")
            out.write("".join(f"{line}\n" for line in missing))
    return missing
