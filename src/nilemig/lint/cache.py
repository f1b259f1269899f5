"""What `nilemig check` keeps between runs in `.nilemig/cache/`, so that a run where little changed is quick.

Three kinds of entry, each a JSON file that names its format and the key it was written for:
- the layout (version folders, env.py) read from alembic.ini, so that the files can be listed without Alembic;
- one migration's render (`MigrationRender`), keyed by the file's sha256 and everything else that changes
  how it renders: the versions of nilemig, Alembic, SQLAlchemy, pglast and Python, env.py and alembic.ini;
- the last whole check's findings, keyed by every file's key and the [tool.nilemig] settings.
An entry that cannot be read, is of another format or was written for another key is ignored and
rewritten: nothing in the folder is trusted. Writes go to a temporary file first, then replace the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.lint.render import Emitted, Layout, MigrationRender, Stop

if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint.engine import CheckResult

FORMAT = 1  # bump when what an entry holds changes
_DISTRIBUTIONS = ("nilemig", "alembic", "sqlalchemy", "pglast")


def versions() -> dict[str, str]:
    """The versions that change how a migration renders or is checked, without importing those packages."""
    from importlib import metadata

    found = {"python": sys.version}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


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
        self._env_py = ""

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
        """Each migration's cache key by real path (`layout()` first: env.py is part of every key)."""
        self._keys = {str(p): _digest(self.ini_key, self._env_py, str(p), _file_sha256(p)) for p in paths}
        return self._keys

    # Whole results

    def result_key(self, settings: dict[str, Any], with_squawk: bool | None) -> str:
        return _digest(sorted(self._keys.items()), settings, with_squawk)

    def result(self, key: str) -> CheckResult | None:
        from nilemig.lint.engine import CheckResult, Finding

        entry = self._read("result.json", key)
        try:
            return None if entry is None else CheckResult(
                [Finding(f["code"], f["severity"], f["message"], Path(f["path"]), int(f["line"]))
                 for f in entry["findings"]],
                int(entry["migrations"]), [(Path(p), str(t)) for p, t in entry["printed"]])
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def store_result(self, key: str, result: CheckResult) -> None:
        self._write("result.json", key, {
            "findings": [{"code": f.code, "severity": f.severity, "message": f.message, "path": str(f.path),
                          "line": f.line} for f in result.findings],
            "migrations": result.migrations, "printed": [[str(p), t] for p, t in result.printed]})

    # One migration's render

    def renders(self) -> dict[str, MigrationRender]:
        """The cached renders of the migrations whose key is unchanged."""
        found = {}
        for path, key in self._keys.items():
            entry = self._read(f"render/{key}.json", key)
            try:
                if entry is not None:
                    found[path] = _render_from_json(entry)
            except (AttributeError, KeyError, TypeError, ValueError):
                pass
        return found

    def store_renders(self, renders: dict[str, MigrationRender]) -> None:
        for path, render in renders.items():
            if path in self._keys:
                self._write(f"render/{self._keys[path]}.json", self._keys[path], _render_to_json(render))
        wanted = {f"{key}.json" for key in self._keys.values()}
        for old in (self.folder / "render").glob("*.json"):
            if old.name not in wanted:  # a file since changed or removed: its entry can only go stale
                old.unlink(missing_ok=True)

    def _read(self, name: str, key: str) -> dict[str, Any] | None:
        try:
            entry = json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
            return None
        return entry

    def _write(self, name: str, key: str, content: dict[str, Any]) -> None:
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
                    json.dump({"format": FORMAT, "key": key, **content}, out)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            pass


def _render_to_json(render: MigrationRender) -> dict[str, Any]:
    stop = render.stop
    return {
        "statements": [{"sql": e.sql, "line": e.line, "lines": sorted(e.lines), "existing_types": e.existing_types}
                       for e in render.statements],
        "stop": None if stop is None else {"line": stop.line, "offline_only": stop.offline_only,
                                           "reason": stop.reason},
        "printed": render.printed,
    }


def _render_from_json(entry: dict[str, Any]) -> MigrationRender:
    stop = entry["stop"]
    statements = [Emitted(str(e["sql"]), int(e["line"]), frozenset(int(n) for n in e["lines"]),
                          {str(k): str(v) for k, v in e["existing_types"].items()}) for e in entry["statements"]]
    return MigrationRender(statements, None if stop is None else Stop(int(stop["line"]), bool(stop["offline_only"]),
                                                                      str(stop["reason"])), str(entry["printed"]))
