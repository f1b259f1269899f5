"""squawk's online-safety rules (https://squawkhq.com), run on each migration's rendered SQL and told about Nile.

The engine hands over every statement it walks (`Squawk.add`); `Squawk.findings` writes one SQL file per
migration, runs squawk once over them all, and maps each finding back to the migration line that emitted
the statement, as code `SQUAWK:<rule>`. squawk is told what nilemig guarantees (each migration runs in its
own transaction, on PostgreSQL 15), and its advice that is wrong on Nile, or that nilemig gives already,
is dropped (`_dropped`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig import nile
from nilemig.errors import NilemigError
from nilemig.lint.registry import ERROR, WARNING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nilemig.lint.chain import MigrationFile
    from nilemig.lint.render import Emitted
    from nilemig.lint.rules import Statement

PREFIX = "SQUAWK:"
NILE_POSTGRES_VERSION = "15.0"
INSTALL_HINT = ("Install it with `pip install 'nilemig[squawk]'` (squawk-cli from PyPI) or put a squawk binary on "
                "PATH, or run `nilemig check` without --squawk (and without `squawk = true` in [tool.nilemig]).")

# nilemig sets lock_timeout and statement_timeout on every migration's connection (`nilemig up` and
# plain `alembic upgrade` through env.py alike); squawk cannot see that from the SQL.
GUARANTEED = frozenset({"require-lock-timeout", "require-statement-timeout", "require-timeout-settings"})
# Reported already by nilemig's own rules: MIG005 (destructive operations), NILE008 (CASCADE), MIG006 (syntax).
DUPLICATES = frozenset({"ban-drop-table", "ban-drop-column", "ban-truncate-cascade", "syntax-error"})
# Sequences and identity columns are forbidden on tenant-aware tables (NILE003), and tenant_id must be uuid
# (NILE002): "use IDENTITY", or "use bigint" for a serial key or for tenant_id, is wrong advice there.
SEQUENCE_ADVICE = frozenset({"prefer-identity", "prefer-bigint-over-int", "prefer-bigint-over-smallint"})
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
# Alembic's autocommit_block() ends the migration's transaction and opens a new one (for CREATE INDEX
# CONCURRENTLY): the supported way, not a nested or forgotten transaction.
AUTOCOMMIT_ADVICE = frozenset({"transaction-nesting", "ban-uncommitted-transaction"})
# The column a finding points at, in `name TYPE`, `ADD COLUMN name TYPE` or `ALTER COLUMN name [SET DATA] TYPE TYPE`.
_COLUMN_BEFORE_TYPE = re.compile(r'"?(\w+)"?\s+(?:(?:SET\s+DATA\s+)?TYPE\s+)?$', re.IGNORECASE)


class SquawkError(NilemigError):
    """squawk could not run, or is configured wrong: nilemig could not check (exit code 2)."""

    exit_code = 2


def executable() -> str:
    """The squawk binary: on PATH, or beside this Python (a virtualenv's bin/ that is not on PATH)."""
    found = shutil.which("squawk") or shutil.which("squawk", path=str(Path(sys.executable).parent))
    if found is None:
        raise SquawkError(f"nilemig check --squawk needs squawk, which is not installed. {INSTALL_HINT}")
    return found


@dataclass
class _Chunk:
    """One statement (as Alembic emitted it) in a migration's SQL file."""

    emitted: Emitted
    first_line: int  # 0-based, in the migration's SQL file, as squawk counts
    tenant_aware: bool


@dataclass
class _Script:
    migration: MigrationFile
    chunks: list[_Chunk] = field(default_factory=list)
    lines: int = 0

    def text(self) -> str:
        return "".join(c.emitted.sql if c.emitted.sql.endswith("\n") else c.emitted.sql + "\n" for c in self.chunks)

    def chunk_at(self, line: int) -> _Chunk:
        return next(c for c in reversed(self.chunks) if c.first_line <= line)


@dataclass(frozen=True)
class SquawkFinding:
    code: str
    severity: str
    message: str
    migration: MigrationFile
    line: int
    lines: frozenset[int]  # every migration line on the stack, where an ignore comment may sit


class Squawk:
    def __init__(self) -> None:
        self.binary = executable()
        self._scripts: dict[str, _Script] = {}

    def add(self, migration: MigrationFile, emitted: Emitted, statement: Statement) -> None:
        """Note one parsed statement of `emitted` (after the engine applied it to the schema)."""
        script = self._scripts.setdefault(migration.key, _Script(migration))
        tenant_aware = any(t is not None and t.tenant_aware
                           for t in (statement.created_table(), statement.target_table()))
        if script.chunks and script.chunks[-1].emitted is emitted:  # several statements in one op.execute()
            script.chunks[-1].tenant_aware |= tenant_aware
            return
        script.chunks.append(_Chunk(emitted, script.lines, tenant_aware))
        script.lines += script.chunks[-1].emitted.sql.count("\n") + (not emitted.sql.endswith("\n"))

    def findings(self, cwd: Path) -> Iterator[SquawkFinding]:
        if not self._scripts:
            return
        with tempfile.TemporaryDirectory(prefix="nilemig-squawk-") as tmp:
            files: dict[str, _Script] = {}
            for n, script in enumerate(self._scripts.values()):
                path = Path(tmp) / f"{n:05d}.sql"
                path.write_text(script.text(), encoding="utf-8")
                files[str(path)] = script
            reported = self._run(list(files), cwd)
        for item in reported:
            script = files.get(item.get("file", ""))
            if script is None:
                continue
            chunk = script.chunk_at(int(item["line"]))
            rule = str(item["rule_name"])
            if self._dropped(rule, _flagged(item, chunk), script, chunk):
                continue
            flagged = _flagged(item, chunk)
            message = " ".join(str(part).strip() for part in (item.get("message"), item.get("help")) if part)
            snippet = flagged.text if len(flagged.text) <= 40 else flagged.text[:39] + "…"
            message += f" (`{snippet}`)" if snippet else ""
            yield SquawkFinding(PREFIX + rule, ERROR if str(item.get("level")).lower() == "error" else WARNING,
                                message, script.migration, chunk.emitted.line, chunk.emitted.lines)

    def _run(self, paths: list[str], cwd: Path) -> list[dict[str, Any]]:
        command = [self.binary, "--reporter", "json", "--assume-in-transaction",
                   f"--pg-version={NILE_POSTGRES_VERSION}", *paths]
        try:
            done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise SquawkError(f"Could not run squawk ({self.binary}): {exc}. {INSTALL_HINT}") from None
        try:
            reported = json.loads(done.stdout or "[]")
        except json.JSONDecodeError:
            reported = None
        # squawk exits 1 when it has findings; anything else, or output that is not its JSON, is a failure.
        if done.returncode not in (0, 1) or not isinstance(reported, list):
            why = (done.stderr or done.stdout).strip().splitlines()
            raise SquawkError(f"squawk ({self.binary}) failed with exit code {done.returncode}: "
                               f"{why[0] if why else 'no output'}. Check that it is squawk-cli 2.x.")
        return reported

    @staticmethod
    def _dropped(rule: str, flagged: _Flagged, script: _Script, chunk: _Chunk) -> bool:
        if rule in GUARANTEED or rule in DUPLICATES:
            return True
        if rule in SEQUENCE_ADVICE:
            return chunk.tenant_aware and (rule == "prefer-identity" or flagged.column == nile.TENANT_ID
                                           or flagged.text.lower() in SERIAL_TYPES)
        if rule in AUTOCOMMIT_ADVICE:
            source = script.migration.lines[chunk.emitted.line - 1]
            return chunk.emitted.sql.strip().rstrip(";").upper() in ("BEGIN", "COMMIT") and "autocommit_block" in source
        return False


@dataclass(frozen=True)
class _Flagged:
    text: str  # the SQL a finding points at, when it fits on one line
    column: str | None  # the column named just before it, when the finding points at a column's type


def _flagged(item: dict[str, Any], chunk: _Chunk) -> _Flagged:
    lines = chunk.emitted.sql.splitlines()
    row = int(item["line"]) - chunk.first_line
    if not 0 <= row < len(lines):
        return _Flagged("", None)
    start, end = int(item.get("column") or 0), int(item.get("column_end") or 0)
    same_line = item.get("line_end", item["line"]) == item["line"]
    match = _COLUMN_BEFORE_TYPE.search(lines[row][:start])
    return _Flagged(lines[row][start:end].strip() if same_line else "", match[1].lower() if match else None)


def enabled(settings: dict[str, Any], requested: bool | None, where: str) -> bool:
    """--squawk / --no-squawk, else `[tool.nilemig] squawk = true` (`settings`), read from `where`."""
    if requested is not None:
        return requested
    value = settings.get("squawk", False)
    if not isinstance(value, bool):
        raise SquawkError(f"{where}: [tool.nilemig] squawk must be true or false, not {value!r}.")
    return value
