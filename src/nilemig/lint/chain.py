"""The migration chain read from the files themselves (with `ast`), so chain rules work
even when the chain is too broken for Alembic to load."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Codes: NILE001, MIG005, SQUAWK:adding-required-field (squawk's rules, `nilemig check --squawk`).
_IGNORE = re.compile(r"#\s*nilemig:\s*ignore\[([A-Za-z0-9:_,\s-]+)\]")


@dataclass
class MigrationFile:
    path: Path
    revision: str | None
    down_revisions: tuple[str, ...]
    lines: list[str]
    downgrade_line: int | None = None
    downgrade_is_empty: bool = False
    upgrade_is_empty: bool = False
    upgrade_end: int | None = None  # last line of upgrade(): what a render stopped early did not reach
    file_ignores: set[str] = field(default_factory=set)
    key: str = ""  # the real path of the file: how the engine matches Alembic's file names to this file
    syntax_error: SyntaxError | None = None  # the file does not compile; revisions were read with a pattern
    # What the rendered upgrade() did, filled in by the engine: {"schema", "data"}; None when not rendered in full
    changes: set[str] | None = None

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1

    def to_json(self) -> dict[str, Any] | None:
        """What `read_migration` found in the file's syntax, for check's cache; None for a file that does not
        compile (read again each time: its SyntaxError is not kept)."""
        if self.syntax_error is not None:
            return None
        return {"revision": self.revision, "down_revisions": list(self.down_revisions),
                "downgrade_line": self.downgrade_line, "downgrade_is_empty": self.downgrade_is_empty,
                "upgrade_is_empty": self.upgrade_is_empty, "upgrade_end": self.upgrade_end,
                "file_ignores": sorted(self.file_ignores)}

    @classmethod
    def from_json(cls, path: Path, text: str, data: dict[str, Any]) -> MigrationFile:
        """The file `to_json` described, whose text is `text`; raises KeyError, TypeError or ValueError on
        anything else."""
        def optional(value: Any, kind: type) -> Any:
            if value is not None and type(value) is not kind:
                raise TypeError(f"{value!r} is not a {kind.__name__}")
            return value

        return cls(path, optional(data["revision"], str), tuple(optional(d, str) for d in data["down_revisions"]),
                   text.splitlines(), optional(data["downgrade_line"], int), bool(data["downgrade_is_empty"]),
                   bool(data["upgrade_is_empty"]), optional(data["upgrade_end"], int),
                   {str(code) for code in data["file_ignores"]}, key=str(path))

    def ignores(self, line: int) -> set[str]:
        """Codes ignored for a statement on `line`: inline, or for the whole file."""
        found = set(self.file_ignores)
        if 0 < line <= len(self.lines):
            found |= _codes(self.lines[line - 1])
        return found


@dataclass
class RenderFailure:
    """Why a migration's upgrade() stopped before its end when rendered offline."""

    path: Path
    line: int
    offline_only: bool  # True: it needs a live database (MIG000); False: it fails on Nile too (MIG007)
    reason: str  # "ModuleNotFoundError: No module named 'pgvector'"
    checked: int  # statements rendered (and checked) before it stopped
    unchecked_to: int | None  # last line of upgrade() not reached, when known


@dataclass
class Chain:
    migrations: list[MigrationFile]
    # migrations whose upgrade() could not be rendered to its end; filled in by the engine
    render_failures: list[RenderFailure] = field(default_factory=list)
    # (file, line, parser message) of SQL that PostgreSQL's parser rejects; filled in by the engine
    sql_errors: list[tuple[Path, int, str]] = field(default_factory=list)

    def by_revision(self) -> dict[str, MigrationFile]:
        return {m.revision: m for m in self.migrations if m.revision}

    def heads(self) -> list[MigrationFile]:
        referenced = {down for m in self.migrations for down in m.down_revisions}
        return [m for m in self.migrations if m.revision and m.revision not in referenced]


def _codes(line: str) -> set[str]:
    match = _IGNORE.search(line)
    return {c.strip() for c in match[1].split(",") if c.strip()} if match else set()


def _literal(node: ast.AST | None):
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _is_empty(function: ast.FunctionDef) -> bool:
    body = [s for s in function.body
            if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) and isinstance(s.value.value, str))]
    return all(isinstance(s, ast.Pass) for s in body)


_ASSIGNED = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(.+?)\s*(?:#.*)?$", re.MULTILINE)


def _read_broken(migration: MigrationFile, text: str, error: SyntaxError) -> MigrationFile:
    """A file Python cannot compile: its revisions by pattern, so the rest of the chain still links up."""
    migration.syntax_error = error
    values = {}
    for name, value in _ASSIGNED.findall(text):
        try:
            values[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue
    _set_revisions(migration, values)
    return migration


def _set_revisions(migration: MigrationFile, values: dict[str, object]) -> None:
    revision = values.get("revision")
    down = values.get("down_revision")
    migration.revision = revision if isinstance(revision, str) else None
    if isinstance(down, str):
        migration.down_revisions = (down,)
    elif isinstance(down, (tuple, list)):
        migration.down_revisions = tuple(d for d in down if isinstance(d, str))


def source_text(content: bytes) -> str:
    """A Python file's text as Python reads it: in the encoding its coding comment names, else UTF-8. Raises
    SyntaxError, as importing it does, when it cannot be decoded."""
    import io
    import tokenize

    encoding, _ = tokenize.detect_encoding(io.BytesIO(content).readline)
    try:
        return content.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise SyntaxError(f"(unicode error) {exc}") from None


def read_migration(path: Path, content: bytes | None = None) -> MigrationFile:
    """One migration file; `path` is a real path (`render.migration_paths` gives them); `content` its bytes
    when already read."""
    content = path.read_bytes() if content is None else content
    try:
        text = source_text(content)
    except SyntaxError as exc:
        text = content.decode("utf-8", "replace")
        exc.filename, exc.lineno = str(path), 1
        return _read_broken(MigrationFile(path, None, (), text.splitlines(), key=str(path)), text, exc)
    lines = text.splitlines()
    migration = MigrationFile(path, None, (), lines, key=str(path))
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        return _read_broken(migration, text, exc)
    values: dict[str, object] = {}
    first_def = len(lines) + 1
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = _literal(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            values[node.target.id] = _literal(node.value)
        elif isinstance(node, ast.FunctionDef):
            first_def = min(first_def, node.lineno)
            if node.name == "downgrade":
                migration.downgrade_line = node.lineno
                migration.downgrade_is_empty = _is_empty(node)
            elif node.name == "upgrade":
                migration.upgrade_is_empty = _is_empty(node)
                migration.upgrade_end = node.end_lineno
    _set_revisions(migration, values)
    for line in lines[: first_def - 1]:
        if line.lstrip().startswith("#"):
            migration.file_ignores |= _codes(line)
    return migration


def read_chain(versions: list[Path], read: Callable[[Path], MigrationFile] = read_migration) -> Chain:
    """Every migration file, oldest first where the chain allows it; `read` reads one (check's cache has its own)."""
    migrations = [read(p) for p in sorted(versions)]
    by_revision = {m.revision: m for m in migrations if m.revision}
    ordered: list[MigrationFile] = []
    placed: set[int] = set()

    def place(m: MigrationFile, seen: frozenset[str]) -> None:
        if id(m) in placed or (m.revision in seen):
            return
        for down in m.down_revisions:
            if down in by_revision:
                place(by_revision[down], seen | {m.revision})
        placed.add(id(m))
        ordered.append(m)

    for m in migrations:
        place(m, frozenset())
    return Chain(ordered)
