"""What `nilemig check` keeps between runs in `.nilemig/cache/`, so that a run where little changed is quick.

Each entry is a JSON file that names its format and the key it was written for:
- the layout (version folders, env.py) read from alembic.ini, so that the files can be listed without Alembic;
- migrations.json: per migration file, keyed by the file's sha256 and everything else that changes how it
  renders (the versions of nilemig, Alembic, SQLAlchemy, pglast and Python, env.py and alembic.ini), what its
  syntax says (`chain.MigrationFile`) and its render (`MigrationRender`, with what Alembic reads from the module
  to link it into the chain, so that an unchanged file is not imported);
- analysis.json: the statement rules' outcome per migration in chain order, with the digests of the schema
  states kept in snapshots/ (every `engine.snapshot_interval` migrations), for `engine._Walk`'s early cutoff;
- the last whole check's findings, keyed by every file's key and the [tool.nilemig] settings.
An entry that cannot be read, is of another format or was written for another key is ignored and
rewritten: nothing in the folder is trusted. Writes go to a temporary file first, then replace the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.lint.chain import MigrationFile, read_migration
from nilemig.lint.render import SCRIPT_ATTRIBUTES, Emitted, Layout, MigrationRender, Stop

if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint.engine import Analysis, CheckResult, Finding
    from nilemig.lint.schema import Schema

FORMAT = 2  # bump when what an entry holds changes
_PACKAGES = ("nilemig", "alembic", "sqlalchemy", "pglast")
_VERSION_LINE = re.compile(r"""^__version__\s*(?::[^=]*)?=\s*["']([^"']+)["']""", re.MULTILINE)


def versions() -> dict[str, str]:
    """The versions that change how a migration renders or is checked, without importing those packages: the
    `__version__` line of each one's __init__.py (importlib.metadata costs more than the rest of a warm check),
    else its installed metadata."""
    from importlib.util import find_spec

    found = {"python": sys.version}
    for name in _PACKAGES:
        spec = find_spec(name)
        try:
            match = _VERSION_LINE.search(Path(spec.origin).read_text(encoding="utf-8")) \
                if spec is not None and spec.origin else None
        except (OSError, ValueError):
            match = None
        found[name] = match[1] if match else _installed_version(name)
    return found


def _installed_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class CheckCache:
    def __init__(self, project: Project):
        self.project = project
        self.folder = project.state_dir / "cache"
        self.versions = versions()
        self.ini_key = _digest(FORMAT, self.versions, str(project.ini_path), project.section,
                               _file_sha256(project.ini_path))
        self._keys: dict[str, str] = {}
        self._texts: dict[str, bytes] = {}
        self._env_py = ""
        self._migrations: dict[str, Any] | None = None  # file key -> its entry in migrations.json, once read

    def layout(self) -> Layout:
        """The project's layout: from the cache while alembic.ini is unchanged, else read through Alembic."""
        from nilemig.lint.render import migration_layout

        entry = self._read(f"layout-{_digest(self.project.section)[:16]}.json", self.ini_key)
        try:
            if entry is not None:
                found = Layout(tuple(Path(f) for f in entry["folders"]), bool(entry["recursive"]),
                               Path(entry["env_py"]))
                return self._note_env_py(found)
        except (AttributeError, KeyError, TypeError, ValueError):
            pass
        found = migration_layout(self.project)
        self._write(f"layout-{_digest(self.project.section)[:16]}.json", self.ini_key,
                    {"folders": [str(f) for f in found.folders], "recursive": found.recursive,
                     "env_py": str(found.env_py)})
        return self._note_env_py(found)

    def foreign_env_py(self) -> Path | None:
        """`core.foreign_env_py`, from the cache while alembic.ini and env.py are unchanged (`layout()` first)."""
        from nilemig.core import foreign_env_py

        key = _digest(self.ini_key, self._env_py)
        entry = self._read(f"env-{_digest(self.project.section)[:16]}.json", key)
        if entry is not None and "foreign" in entry and isinstance(entry["foreign"], (str, type(None))):
            return None if entry["foreign"] is None else Path(entry["foreign"])
        found = foreign_env_py(self.project)
        self._write(f"env-{_digest(self.project.section)[:16]}.json", key,
                    {"foreign": None if found is None else str(found)})
        return found

    def _note_env_py(self, layout: Layout) -> Layout:
        self._env_py = _file_sha256(layout.env_py)
        return layout

    def keys(self, paths: list[Path]) -> dict[str, str]:
        """Each migration's cache key by real path (`layout()` first: env.py is part of every key). The files'
        contents are kept for `migration_file`."""
        base = f"{self.ini_key}:{self._env_py}:"
        self._keys, self._texts = {}, {}
        for path in paths:
            name = str(path)
            try:
                self._texts[name] = content = path.read_bytes()
                sha = hashlib.sha256(content).hexdigest()
            except OSError:
                sha = "unreadable"
            self._keys[name] = hashlib.sha256(f"{base}{name}:{sha}".encode()).hexdigest()
        return self._keys

    def keys_by_path(self) -> dict[str, str]:
        return self._keys

    # Whole results

    def result_key(self, settings: dict[str, Any], with_squawk: bool | None) -> str:
        return _digest(sorted(self._keys.items()), settings, with_squawk)

    def result(self, key: str) -> CheckResult | None:
        from nilemig.lint.engine import CheckResult

        entry = self._read("result.json", key)
        try:
            return None if entry is None else CheckResult(
                [_finding_from_json(f) for f in entry["findings"]],
                int(entry["migrations"]), [(Path(p), str(t)) for p, t in entry["printed"]])
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def store_result(self, key: str, result: CheckResult) -> None:
        self._write("result.json", key, {
            "findings": [_finding_to_json(f) for f in result.findings],
            "migrations": result.migrations, "printed": [[str(p), t] for p, t in result.printed]})

    # Each migration file: what its syntax says (chain.MigrationFile) and its render

    def _entries(self) -> dict[str, Any]:
        if self._migrations is None:
            entry = self._read("migrations.json", self._base_key())
            items = entry.get("migrations") if entry is not None else None
            self._migrations = items if isinstance(items, dict) else {}
        return self._migrations

    def _base_key(self) -> str:
        return _digest(self.ini_key, self._env_py)

    def migration_file(self, path: Path) -> MigrationFile:
        """`chain.read_migration(path)`, from the cache while the file is unchanged (`keys()` first)."""
        name = str(path)
        key, content = self._keys.get(name), self._texts.get(name)
        if content is not None:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                return read_migration(path)
            item = self._entries().get(key) if key else None
            try:
                if isinstance(item, dict) and isinstance(item.get("file"), dict):
                    return MigrationFile.from_json(path, text, item["file"])
            except (AttributeError, KeyError, TypeError, ValueError):
                pass
            return read_migration(path, text)
        return read_migration(path)

    def renders(self) -> dict[str, MigrationRender]:
        """The cached renders of the migrations whose key is unchanged."""
        found = {}
        entries = self._entries()
        for path, key in self._keys.items():
            item = entries.get(key)
            try:
                if isinstance(item, dict) and item.get("render") is not None:
                    found[path] = _render_from_json(item["render"])
            except (AttributeError, KeyError, TypeError, ValueError):
                pass
        return found

    def store_migrations(self, migrations: list[MigrationFile], renders: dict[str, MigrationRender]) -> None:
        """Keep each current file's syntax and its render (the new one in `renders`, else the cached one); drop
        the entries of files since changed or removed. Written only when something changed."""
        old = self._entries()
        items: dict[str, Any] = {}
        for migration in migrations:
            key = self._keys.get(migration.key)
            if key is None:
                continue
            before = old.get(key) if isinstance(old.get(key), dict) else {}
            render = renders.get(migration.key)
            items[key] = {"file": migration.to_json(),
                          "render": _render_to_json(render) if render is not None else before.get("render")}
        if items != old:
            self._migrations = items
            self._write("migrations.json", self._base_key(), {"migrations": items})

    # The statement rules' analysis, and the schema states it keeps

    def analysis_key(self, settings: dict[str, Any]) -> str:
        # Messages name other files relative to the current directory (core.display_path).
        return _digest(self._base_key(), settings, os.getcwd())

    def analysis(self, key: str) -> Analysis | None:
        from nilemig.lint.engine import Analysis, Outcome

        entry = self._read("analysis.json", key)
        try:
            if entry is None:
                return None
            order = [str(k) for k in entry["order"]]
            outcomes = [Outcome([_finding_from_json(f) for f in o["findings"]],
                                [(int(line), str(why)) for line, why in o["sql_errors"]],
                                [str(c) for c in o["changes"]]) for o in entry["outcomes"]]
            snapshots = {int(p): str(d) for p, d in entry["snapshots"]}
            if len(order) != len(outcomes) or any(not 0 <= p < len(order) for p in snapshots):
                return None
            return Analysis(order, outcomes, snapshots)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def store_analysis(self, key: str, analysis: Analysis) -> None:
        self._write("analysis.json", key, {
            "order": analysis.order,
            "outcomes": [{"findings": [_finding_to_json(f) for f in o.findings],
                          "sql_errors": [list(e) for e in o.sql_errors], "changes": o.changes}
                         for o in analysis.outcomes],
            "snapshots": sorted(analysis.snapshots.items())})
        wanted = {f"{digest}.json" for digest in analysis.snapshots.values()}
        for old in (self.folder / "snapshots").glob("*.json"):
            if old.name not in wanted:
                old.unlink(missing_ok=True)

    def store_snapshot(self, state: dict[str, Any]) -> str:
        """Keep a schema state (`Schema.to_json`) under its digest, which it returns."""
        from nilemig.lint.schema import state_digest, state_text

        text = state_text(state)
        digest = state_digest(text)
        if not (self.folder / "snapshots" / f"{digest}.json").is_file():
            self._write_text(f"snapshots/{digest}.json",
                             f'{{"format":{FORMAT},"key":{json.dumps(digest)},"state":{text}}}')
        return digest

    def snapshot(self, digest: str) -> Schema | None:
        """The schema state kept under `digest`, when it is one and really has that digest."""
        from nilemig.lint.schema import Schema, state_digest, state_text

        entry = self._read(f"snapshots/{digest}.json", digest)
        try:
            schema = None if entry is None else Schema.from_json(entry["state"])
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        return schema if schema is not None and state_digest(state_text(schema.to_json())) == digest else None

    def _read(self, name: str, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
            return None
        return entry

    def _write(self, name: str, key: str, content: dict[str, Any]) -> None:
        # dumps, not dump: dump encodes piece by piece in Python, several times slower on big entries
        self._write_text(name, json.dumps({"format": FORMAT, "key": key, **content}, separators=(",", ":")))

    def _write_text(self, name: str, text: str) -> None:
        """Atomically, and silently not at all where the folder cannot be written: the cache only saves time."""
        target = self.folder / name
        try:
            if not self.folder.is_dir():
                self.folder.mkdir(parents=True)
                # As pytest's and ruff's caches do: ignored by git even in a project without nilemig's .gitignore.
                (self.folder / ".gitignore").write_text("*\n")
            target.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write(text)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            pass


def _finding_to_json(finding: Finding) -> list[Any]:
    return [finding.code, finding.severity, finding.message, str(finding.path), finding.line]


def _finding_from_json(data: Any) -> Finding:
    from nilemig.lint.engine import Finding

    code, severity, message, path, line = data
    return Finding(str(code), str(severity), str(message), Path(path), int(line))


def _render_to_json(render: MigrationRender) -> dict[str, Any]:
    stop = render.stop
    return {
        "statements": [{"sql": e.sql, "line": e.line, "lines": sorted(e.lines), "existing_types": e.existing_types}
                       for e in render.statements],
        "stop": None if stop is None else {"line": stop.line, "offline_only": stop.offline_only,
                                           "reason": stop.reason},
        "printed": render.printed,
        "script": render.script,
    }


def _render_from_json(entry: dict[str, Any]) -> MigrationRender:
    stop = entry["stop"]
    statements = [Emitted(str(e["sql"]), int(e["line"]), frozenset(int(n) for n in e["lines"]),
                          {str(k): str(v) for k, v in e["existing_types"].items()}) for e in entry["statements"]]
    return MigrationRender(statements, None if stop is None else Stop(int(stop["line"]), bool(stop["offline_only"]),
                                                                      str(stop["reason"])), str(entry["printed"]),
                           _script_from_json(entry["script"]))


def _script_from_json(script: Any) -> dict[str, Any] | None:
    """Alembic's attributes of a module (`render.script_attributes`), when they have the types it allows."""
    if script is None:
        return None
    found = {}
    for name in SCRIPT_ATTRIBUTES:
        value = script[name]
        if not (value is None or isinstance(value, str) or
                (isinstance(value, list) and all(isinstance(v, str) for v in value))):
            raise TypeError(f"{name}: {value!r}")
        found[name] = value
    if not isinstance(found["revision"], str):
        raise TypeError("no revision")
    return found
