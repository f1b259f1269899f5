"""What `nilemig check` keeps between runs in `.nilemig/cache/`, so that a run where little changed is quick.

Each entry is a JSON file that names its format and the key it was written for:
- the layout (version folders, env.py) read from alembic.ini, so that the files can be listed without Alembic;
- migrations.json: per migration file, keyed by the file's sha256 and everything else that changes how it
  renders (the versions of nilemig, Alembic, SQLAlchemy, pglast and Python, env.py and alembic.ini), what its
  syntax says (`chain.MigrationFile`) and its render (`MigrationRender`, with what Alembic reads from the module
  to link it into the chain, so that an unchanged file is not imported);
- analysis.json: the statement rules' outcome per migration in chain order, with the digests of the schema
  states kept in snapshots/ (every `engine.snapshot_interval` migrations), for `engine._Walk`'s early cutoff;
- files.json: each file's stat signature with the sha256 of its content and of its code (`_code_sha`), so
  that an unchanged file is not read (`CheckCache._content_sha` says why that is safe);
- unfiltered.json: the last whole check's findings before ignore comments are applied, keyed by every file's
  code (comments left out) and the [tool.nilemig] settings: after an edit of comments alone (the usual
  `# nilemig: ignore[...]` after a finding), the answer is these findings filtered by the files' comments;
- the last whole check's findings, keyed by every file's key and the [tool.nilemig] settings;
- imports.json: the user's own modules (helpers, models.py) that rendering migrations imported and files they read
  (a SQL file), whose content is part of every key with env.py's, and the environment variables they read, whose
  values are: an edited helper or a variable set otherwise renders the migrations again.
An entry that cannot be read, is of another format or was written for another key is ignored and
rewritten: nothing in the folder is trusted. Writes go to a temporary file first, then replace the entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.lint.chain import MigrationFile, read_migration, source_text
from nilemig.lint.render import (
    SCRIPT_ATTRIBUTES,
    Emitted,
    Layout,
    MigrationRender,
    Stop,
)

if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint.engine import Analysis, CheckResult, Finding, Reported, Unfiltered
    from nilemig.lint.schema import Schema

FORMAT = 3  # bump when what an entry holds changes
_PACKAGES = ("nilemig", "alembic", "sqlalchemy", "pglast")
# A file changed less than this before its signature would be taken may change again within the same timestamp.
_RACY_NS = 2_000_000_000
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


def _code_sha(content: bytes) -> str:
    """sha256 of what a file's code compiles to: comments and blank lines leave it alone, and it names the line
    (and column) of everything, as a render names lines; of the bytes themselves when they do not compile.

    Marshal format 2 writes no back-references, whose presence depends on reference counts, so the same code
    gives the same bytes in every run (the Python version is in every key); a set literal's frozenset, ordered
    by string hashes, may not: such a file's comment-only edit then takes the usual incremental path."""
    import marshal

    try:
        code = compile(content, "<migration>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return "bytes:" + hashlib.sha256(content).hexdigest()
    return hashlib.sha256(marshal.dumps(code, 2)).hexdigest()


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
        self._texts: dict[str, bytes] = {}  # the content of each file read in this run, by real path
        # real path -> [size, mtime_ns, inode, ctime_ns, content sha256, code sha256 or None] (`_content_sha`)
        entry = self._read("files.json", "files")
        files = entry.get("files") if entry is not None else None
        self._signatures_stored: dict[str, list[Any]] = files if isinstance(files, dict) else {}
        self._signatures: dict[str, list[Any]] = {}
        self._started_ns = time.time_ns()
        self._env_py = ""
        self._layout: Layout | None = None
        self._migrations: dict[str, Any] | None = None  # file key -> its entry in migrations.json, once read
        self._imports: dict[str, set[str]] | None = None  # imports.json, once read (`_imported`)

    def layout(self) -> Layout:
        """The project's layout: from the cache while alembic.ini is unchanged, else read through Alembic."""
        if self._layout is None:
            self._layout = self._note_env_py(self._read_layout())
        return self._layout

    def _read_layout(self) -> Layout:
        from nilemig.lint.render import migration_layout

        entry = self._read(f"layout-{_digest(self.project.section)[:16]}.json", self.ini_key)
        try:
            if entry is not None:
                return Layout(tuple(Path(f) for f in entry["folders"]), bool(entry["recursive"]),
                              Path(entry["env_py"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            pass
        found = migration_layout(self.project)
        self._write(f"layout-{_digest(self.project.section)[:16]}.json", self.ini_key,
                    {"folders": [str(f) for f in found.folders], "recursive": found.recursive,
                     "env_py": str(found.env_py)})
        return found

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
        # Every key also names the content of the user's files that rendering migrations imported or read last
        # time, and the environment variables they read (render._ImportWatch): a helper or an enum edited, or a
        # variable set, changes what the migrations using it render.
        imported = self._imported()
        self._env_py = _digest(_file_sha256(layout.env_py),
                               [(name, _file_sha256(Path(name))) for name in sorted(imported["files"])],
                               [(name, os.environ.get(name)) for name in sorted(imported["environ"])])
        return layout

    def _imported(self) -> dict[str, set[str]]:
        """What imports.json says, read once per run: {"files": ..., "environ": ...}."""
        if self._imports is None:
            entry = self._read("imports.json", "imports") or {}
            self._imports = {kind: {f for f in found if isinstance(f, str)} if isinstance(found, list) else set()
                             for kind, found in ((kind, entry.get(kind)) for kind in ("files", "environ"))}
        return self._imports

    def store_imports(self, files: set[str], environ: set[str], whole_chain: bool) -> None:
        """Keep the user's files the migrations rendered in this run imported or read and the environment
        variables they read, with (unless the whole chain was rendered) those noted before: the migrations reused
        from the cache still use those."""
        known = self._imported()
        wanted = {"files": files, "environ": environ}
        if not whole_chain:
            wanted = {kind: found | known[kind] for kind, found in wanted.items()}
        if wanted != known:
            self._imports = wanted
            self._write("imports.json", "imports", {kind: sorted(found) for kind, found in wanted.items()})

    def keys(self, paths: list[str]) -> dict[str, str]:
        """Each migration's cache key by real path (`layout()` first: env.py is part of every key)."""
        base = f"{self.ini_key}:{self._env_py}:"
        self._keys, self._texts, self._signatures = {}, {}, {}
        for name in paths:
            sha = self._content_sha(name)
            self._keys[name] = hashlib.sha256(f"{base}{name}:{sha}".encode()).hexdigest()
        self._store_signatures()
        return self._keys

    def _content_sha(self, name: str) -> str:
        """The sha256 of a file's content; not read again while its stat signature is the one recorded with it.

        As git's index does: a write changes the ctime (which no one can set back) and mostly the size, mtime or
        inode (editors that replace the file). A write within the file system's timestamp granularity of the
        recording could keep all four, so a signature is recorded only for a file last changed a while before
        (a "racily clean" file is hashed again until it is older)."""
        try:
            stat = os.stat(name)
        except OSError:
            return "unreadable"
        signature = [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns]
        known = self._signatures_stored.get(name)
        if isinstance(known, list) and len(known) == 6 and known[:4] == signature:
            self._signatures[name] = known
            return str(known[4])
        try:
            self._texts[name] = content = Path(name).read_bytes()
        except OSError:
            return "unreadable"
        sha = hashlib.sha256(content).hexdigest()
        if self._started_ns - stat.st_mtime_ns > _RACY_NS and self._started_ns - stat.st_ctime_ns > _RACY_NS:
            self._signatures[name] = [*signature, sha, None]
        return sha

    def code_key(self) -> str:
        """A digest of every migration's code (`_code_sha`: what it compiles to, comments left out), so that an edit
        of comments alone (as adding `# nilemig: ignore[...]`) keeps it (`keys()` first)."""
        codes = []
        for name in sorted(self._keys):
            known = self._signatures.get(name)
            code = known[5] if known is not None and isinstance(known[5], str) else None
            if code is None:
                content = self._text(name)
                code = _code_sha(content) if content is not None else "unreadable"
                if known is not None:
                    self._signatures[name] = [*known[:5], code]
            codes.append((name, code))
        self._store_signatures()
        return _digest(self._base_key(), codes)

    def _store_signatures(self) -> None:
        if self._signatures != self._signatures_stored:
            self._write("files.json", "files", {"files": self._signatures})
            self._signatures_stored = dict(self._signatures)

    def _text(self, name: str) -> bytes | None:
        if name not in self._texts:
            try:
                self._texts[name] = Path(name).read_bytes()
            except OSError:
                return None
        return self._texts[name]

    def keys_by_path(self) -> dict[str, str]:
        return self._keys

    # Whole results

    def result_key(self, settings: dict[str, Any], with_squawk: bool | None) -> str:
        # Messages name other files relative to the current directory (core.display_path).
        return _digest(sorted(self._keys.items()), settings, with_squawk, os.getcwd())

    def unfiltered_key(self, settings: dict[str, Any], with_squawk: bool | None) -> str:
        # Messages name other files relative to the current directory (core.display_path).
        return _digest(self.code_key(), settings, with_squawk, os.getcwd())

    def unfiltered(self, key: str) -> Unfiltered | None:
        from nilemig.lint.engine import Unfiltered

        return self._whole("unfiltered.json", key, "reported", _reported_from_json, Unfiltered)

    def store_unfiltered(self, key: str, unfiltered: Unfiltered) -> None:
        self._store_whole("unfiltered.json", key, "reported", [_reported_to_json(r) for r in unfiltered.reported],
                          unfiltered)

    def result(self, key: str) -> CheckResult | None:
        from nilemig.lint.engine import CheckResult

        return self._whole("result.json", key, "findings", _finding_from_json, CheckResult)

    def store_result(self, key: str, result: CheckResult) -> None:
        self._store_whole("result.json", key, "findings", [_finding_to_json(f) for f in result.findings], result)

    def _whole(self, name: str, key: str, field: str, from_json: Callable[[Any], Any],
               build: Callable[..., Any]) -> Any:
        """A whole check's answer kept under `name`: `build(items, migrations, printed)`; None when absent or bad."""
        entry = self._read(name, key)
        try:
            return None if entry is None else build(
                [from_json(item) for item in entry[field]],
                int(entry["migrations"]), [(Path(p), str(t)) for p, t in entry["printed"]])
        except (AttributeError, KeyError, TypeError, ValueError):
            return None

    def _store_whole(self, name: str, key: str, field: str, items: list[Any], whole: CheckResult | Unfiltered) -> None:
        self._write(name, key, {field: items, "migrations": whole.migrations,
                                "printed": [[str(p), t] for p, t in whole.printed]})

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
        key, content = self._keys.get(name), self._text(name)
        item = self._entries().get(key) if key and content is not None else None
        if isinstance(item, dict) and isinstance(item.get("file"), dict):
            try:
                return MigrationFile.from_json(path, source_text(content), item["file"])
            except (AttributeError, KeyError, TypeError, ValueError, SyntaxError):
                pass
        return read_migration(path, content)

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
            outcomes = [Outcome([_reported_from_json(f) for f in o["findings"]],
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
            "outcomes": [{"findings": [_reported_to_json(r) for r in o.findings],
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
            import tempfile  # only when writing: a check where nothing changed writes nothing

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


def _reported_to_json(reported: Reported) -> list[Any]:
    return [*_finding_to_json(reported.finding), sorted(reported.lines)]


def _reported_from_json(data: Any) -> Reported:
    from nilemig.lint.engine import Reported

    *finding, lines = data
    return Reported(_finding_from_json(finding), frozenset(int(n) for n in lines))


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
