"""Runs the rules over a project's migrations: no database needed."""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.core import display_path, explain_errors
from nilemig.errors import NilemigError
from nilemig.lint.chain import MigrationFile, RenderFailure, read_chain, read_migration
from nilemig.lint.registry import ERROR, RULES, Kind

# The rules (and SQLAlchemy, which they load through nilemig.nile) are imported where they run: a check that
# finds its answer in the cache needs none of them.
if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint import squawk
    from nilemig.lint.cache import CheckCache
    from nilemig.lint.render import Rendered
    from nilemig.lint.schema import BecameTenantAware, Location, Schema, Table


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    path: Path
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity, "message": self.message,
                "file": display_path(self.path), "line": self.line}


@dataclass
class CheckResult:
    findings: list[Finding]
    migrations: int
    printed: list[tuple[Path, str]] = field(default_factory=list)  # what migration code printed while rendering

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != ERROR]


def tool_settings(project: Project) -> dict[str, Any]:
    """The project's [tool.nilemig] table in pyproject.toml (empty without one)."""
    pyproject = project.root / "pyproject.toml"
    if not pyproject.is_file():
        return {}
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        return tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("nilemig", {})
    except tomllib.TOMLDecodeError as exc:
        raise NilemigError(f"{display_path(pyproject)} is not valid TOML: {exc}.") from None


def configured_ignores(project: Project, settings: dict[str, Any]) -> set[str]:
    """Codes turned off in pyproject.toml: [tool.nilemig] ignore = ["NILE011", "SQUAWK:prefer-text-field"]."""
    from nilemig.lint import rules, squawk  # noqa: F401 - rules: registers the rules
    ignored = set(settings.get("ignore", []))
    unknown = sorted(c for c in ignored - set(RULES) if not c.startswith(squawk.PREFIX))
    if unknown:
        raise NilemigError(f"{display_path(project.root / 'pyproject.toml')}: [tool.nilemig] ignore names unknown "
                           f"rule(s) {', '.join(unknown)}. `nilemig rules` lists them.")
    return ignored


@dataclass(frozen=True)
class Reported:
    """A finding before the migration's ignore comments are applied: what its code alone decides, so that what
    check keeps of it stays true when only comments change."""

    finding: Finding
    lines: frozenset[int]  # the lines an ignore comment for it may sit on


@dataclass
class Unfiltered:
    """A whole check's findings (chain order) before ignore comments are applied."""

    reported: list[Reported]
    migrations: int
    printed: list[tuple[Path, str]]

    def result(self, migration_file: Callable[[Path], MigrationFile]) -> CheckResult:
        """The findings that no ignore comment of their file (`migration_file(path)`) turns off, once each."""
        read = functools.cache(migration_file)
        findings: dict[tuple[str, Path, int, str], Finding] = {}
        for reported in self.reported:
            f = reported.finding
            ignores = read(f.path)
            if not any(f.code in ignores.ignores(n) for n in reported.lines):
                findings.setdefault((f.code, f.path, f.line, f.message), f)
        return CheckResult(list(findings.values()), self.migrations, self.printed)


class _Reporter:
    """Collects findings once each (one problem, one finding), minus the codes [tool.nilemig] ignores."""

    def __init__(self, ignored: set[str]):
        self.ignored = ignored
        self.reported: dict[Reported, None] = {}

    def __call__(self, code: str, message: str, migration: MigrationFile, line: int,
                 lines: frozenset[int] = frozenset(), severity: str | None = None) -> None:
        if code not in self.ignored:
            finding = Finding(code, severity or RULES[code].severity, message, migration.path, line)
            self.reported.setdefault(Reported(finding, frozenset({line, *lines})), None)


def check(project: Project, only: set[Path] | None = None, with_squawk: bool | None = None,
          use_cache: bool = True, cache: CheckCache | None = None) -> CheckResult:
    """Lint every migration; report findings in `only` (all files when None). `with_squawk`: add squawk's
    findings (None: as [tool.nilemig] squawk says). `use_cache`: reuse and keep what earlier runs rendered
    and found in .nilemig/cache/ (lint/cache.py), through `cache` when one is open for `project` already."""
    from nilemig.lint.render import migration_paths

    settings = tool_settings(project)
    if use_cache:
        if cache is None:
            from nilemig.lint.cache import CheckCache

            cache = CheckCache(project)
        paths = cache.layout().paths()
        cache.keys(paths)
        # The settings were checked when these were stored; with squawk on, none was stored (see below).
        result_key = cache.result_key(settings, with_squawk)
        result = cache.result(result_key)
        if result is None:
            # Only comments changed since this was stored: nothing is rendered or analysed again.
            unfiltered_key = cache.unfiltered_key(settings, with_squawk)
            unfiltered, squawk_ran = cache.unfiltered(unfiltered_key), False
            if unfiltered is None:
                unfiltered, squawk_ran = _check_all(project, [Path(p) for p in paths], settings, with_squawk, cache)
            result = unfiltered.result(cache.migration_file)
            if not squawk_ran:  # squawk's findings come from a program of its own, outside the keys
                cache.store_unfiltered(unfiltered_key, unfiltered)
                cache.store_result(result_key, result)
    else:
        unfiltered, _ = _check_all(project, migration_paths(project), settings, with_squawk, None)
        result = unfiltered.result(read_migration)
    if only is not None:
        wanted = {os.path.realpath(p) for p in only}
        result.findings = [f for f in result.findings if os.path.realpath(f.path) in wanted]
    return result


def _check_all(project: Project, paths: list[Path], settings: dict[str, Any], with_squawk: bool | None,
               cache: CheckCache | None) -> tuple[Unfiltered, bool]:
    """Every finding in `paths` (before ignore comments), in chain order, rendering and analysing only what
    `cache` does not hold; and whether squawk ran."""
    from nilemig.lint import squawk
    from nilemig.lint.render import render

    report = _Reporter(configured_ignores(project, settings))
    with_squawk = squawk.enabled(settings, with_squawk, display_path(project.root / "pyproject.toml"))
    with explain_errors(project):
        chain = read_chain(paths, cache.migration_file if cache else read_migration)
    by_key = {m.key: m for m in chain.migrations}
    linter = squawk.Squawk() if with_squawk else None
    printed: list[tuple[Path, str]] = []

    known = chain.by_revision()
    loadable = all(down in known for m in chain.migrations for down in m.down_revisions)
    if loadable and paths:
        reused = cache.renders() if cache else {}
        rendered = render(project, chain.migrations, known=reused)
        printed = list(rendered.printed.items())
        # squawk is handed every statement as it is walked: with it, nothing is reused or kept.
        keep = cache is not None and linter is None
        analysis_key = cache.analysis_key(settings) if cache is not None else ""
        walk = _Walk(rendered, by_key, report.ignored, linter, cache if keep else None,
                     cache.analysis(analysis_key) if keep else None)
        for key, outcome in zip(rendered.order, walk.run()):
            migration = by_key[key]
            report.reported.update(dict.fromkeys(outcome.findings))
            chain.sql_errors += [(migration.path, line, why) for line, why in outcome.sql_errors]
            stop = rendered.stops.get(key)
            migration.changes = set(outcome.changes) if stop is None else None
            if stop is not None:
                chain.render_failures.append(RenderFailure(migration.path, stop.line, stop.offline_only,
                                                           stop.reason, len(rendered.statements[key]),
                                                           migration.upgrade_end))
        if cache is not None:
            cache.store_imports(rendered.imports, rendered.environ, whole_chain=not reused)
            cache.store_migrations(chain.migrations, {key: rendered.of(key) for key in rendered.order})
            if keep:
                cache.store_analysis(analysis_key, walk.analysis)
        for found in linter.findings(project.root) if linter else ():
            report(found.code, found.message, found.migration, found.line, found.lines, found.severity)
    elif cache is not None:
        cache.store_migrations(chain.migrations, {})

    for rule in sorted(RULES.values(), key=lambda r: r.code):
        if rule.kind is Kind.CHAIN:
            for message, path, line in rule.check(chain):
                report(rule.code, message, by_key[os.path.realpath(path)], line)

    order = {m.path: i for i, m in enumerate(chain.migrations)}
    reported = sorted(report.reported, key=lambda r: (order.get(r.finding.path, 0), r.finding.line, r.finding.code))
    return Unfiltered(reported, len(chain.migrations), printed), with_squawk


@dataclass
class Outcome:
    """What analysing one migration's statements found: check's cache keeps it per migration."""

    findings: list[Reported]
    sql_errors: list[tuple[int, str]]  # (line, parser message)
    changes: list[str]  # "schema", "data": what its statements did


@dataclass
class Analysis:
    """The statement rules' outcome for a whole chain, in the order the migrations ran, with the schema state
    before some of them (by digest; the states themselves are kept apart, `CheckCache.snapshot`)."""

    order: list[str]  # the migrations' cache keys (`CheckCache.keys`): a changed file has another
    outcomes: list[Outcome]
    snapshots: dict[int, str]  # position in `order` -> digest of the schema before that migration


def snapshot_interval(migrations: int) -> int:
    """How many migrations apart the kept schema states are. Starting at a changed migration replays at most
    this many; keeping them costs migrations / interval states: the square root balances the two."""
    return max(16, math.isqrt(migrations))


@dataclass
class _Virtual:
    """While the walk reuses outcomes: the schema before new position `start` equals the one before old position
    `old_start` of the previous analysis; `schema` is that state, as the walk had it then (not changed since)."""

    start: int
    old_start: int
    schema: Schema


class _Walk:
    """The statement rules over every rendered statement, following the schema migration by migration.

    With a `previous` analysis, "early cutoff": the outcome of a migration is reused when its file (key) is the
    one analysed before and the schema before it is the one it was analysed on. That holds from the start of the
    chain up to the first changed migration; there the schema is rebuilt from the nearest kept state (replaying
    at most `snapshot_interval` migrations), the changed migrations are analysed, and analysis goes on until a
    kept state of the previous analysis is met again with an equal digest. A cold analysis is the same walk
    without anything to reuse, so both give the same findings."""

    def __init__(self, rendered: Rendered, by_key: dict[str, MigrationFile], ignored: set[str],
                 linter: squawk.Squawk | None, cache: CheckCache | None, previous: Analysis | None):
        from nilemig.lint import rules  # noqa: F401 - registers the rules

        self.rendered = rendered
        self.by_key = by_key
        self.ignored = ignored
        self.linter = linter
        self.cache = cache
        self.previous = previous or Analysis([], [], {})
        keys = cache.keys_by_path() if cache is not None else {}
        self.analysis = Analysis([keys.get(path, path) for path in rendered.order], [], {})
        self.statement_rules = [r for r in sorted(RULES.values(), key=lambda r: r.code) if r.kind is Kind.STATEMENT]

    def run(self) -> list[Outcome]:
        from nilemig.lint.schema import Schema

        previous, outcomes, snapshots = self.previous, self.analysis.outcomes, self.analysis.snapshots
        old_position = {key: i for i, key in enumerate(previous.order)}
        every = snapshot_interval(len(self.analysis.order))
        schema = Schema.with_nile_builtins()
        virtual = _Virtual(0, 0, schema) if previous.order else None
        last_kept = 0
        for position, (path, key) in enumerate(zip(self.rendered.order, self.analysis.order)):
            if virtual is None and self.cache is not None:
                old = old_position.get(key)
                if old is not None and old in previous.snapshots and self._digest(schema) == previous.snapshots[old]:
                    virtual = _Virtual(position, old, schema)
            if virtual is not None:
                old = virtual.old_start + position - virtual.start
                if old < len(previous.order) and previous.order[old] == key:
                    outcomes.append(previous.outcomes[old])
                    if old in previous.snapshots:
                        snapshots[position], last_kept = previous.snapshots[old], position
                    continue
                schema = self._rebuild(virtual, position)
                virtual = None
            if self.cache is not None and position - last_kept >= every:
                snapshots[position], last_kept = self.cache.store_snapshot(schema.to_json()), position
            outcomes.append(self._analyse(path, schema))
        return outcomes

    def _digest(self, schema: Schema) -> str:
        from nilemig.lint.schema import state_digest, state_text

        return state_digest(state_text(schema.to_json()))

    def _rebuild(self, virtual: _Virtual, position: int) -> Schema:
        """The schema before `position`: from the latest state kept within the reused stretch (or the one the
        stretch began with), then the migrations since replayed."""
        assert self.cache is not None
        start, schema = virtual.start, virtual.schema
        old_end = virtual.old_start + position - virtual.start
        for old in sorted((o for o in self.previous.snapshots if virtual.old_start < o <= old_end), reverse=True):
            kept = self.cache.snapshot(self.previous.snapshots[old])
            if kept is not None:
                start, schema = virtual.start + old - virtual.old_start, kept
                break
        for path in self.rendered.order[start:position]:
            self._analyse(path, schema)
        return schema

    def _analyse(self, path: str, schema: Schema) -> Outcome:
        """One migration's statements: the rules' findings, with `schema` updated as its statements change it."""
        from nilemig.lint import rules
        from nilemig.lint.schema import Location, apply
        from nilemig.tenants import template_sql

        migration = self.by_key[path]
        report = _Reporter(self.ignored)
        sql_errors: list[tuple[int, str]] = []

        def run_rules(statement: rules.Statement, lines: frozenset[int]) -> None:
            for rule in self.statement_rules:
                for message in rule.check(statement):
                    report(rule.code, message, migration, statement.location.line, lines)

        transitions: dict[tuple[str, str], _Transition] = {}
        changes: set[str] = set()
        for emitted in self.rendered.statements[path]:
            location = Location(migration.path, emitted.line)
            # A for_each_tenant step renders as a commented template: its SQL is checked as a step's,
            # which changes rows once per tenant, never the schema.
            step_sql = template_sql(emitted.sql)
            for node in _parse(emitted.sql if step_sql is None else step_sql, location, sql_errors):
                changes.add("data" if type(node).__name__ in _DATA else "schema")
                statement = rules.Statement(node, schema, location, emitted.existing_types,
                                            in_step=step_sql is not None)
                run_rules(statement, emitted.lines)
                if self.linter:
                    self.linter.add(migration, emitted, statement)
                if step_sql is not None:
                    continue
                target = statement.target_table()
                was_tenant_aware = target is not None and target.tenant_aware
                apply(schema, node, location)
                if target is not None and not was_tenant_aware and target.tenant_aware \
                        and target.key not in transitions:
                    transitions[target.key] = _Transition(
                        target, location, emitted.lines, target.primary_key, dict(target.sequences),
                        list(target.foreign_keys), schema.referencing(target), dict(target.uniques))
        for transition in transitions.values():
            standing = transition.still_standing(schema)
            if standing is not None:
                run_rules(rules.Statement(standing, schema, transition.location), transition.lines)
        return Outcome(list(report.reported), sql_errors, sorted(changes))


@dataclass
class _Transition:
    """A table that got `tenant_id uuid` in the migration being checked, as it was right then."""

    table: Table
    location: Location
    lines: frozenset[int]
    primary_key: tuple[str, ...]
    sequences: dict[str, str]
    foreign_keys: list[Any]
    incoming: list[tuple[Table, Any]]
    uniques: dict[str, tuple[str, ...]]

    def still_standing(self, schema: Schema) -> BecameTenantAware | None:
        """What the table still has of that at the end of the migration (changes since were judged on their own)."""
        from nilemig.lint.schema import BecameTenantAware

        table = self.table
        if schema.tables.get(table.key) is not table or not table.tenant_aware:
            return None
        return BecameTenantAware(
            table,
            table.primary_key if table.primary_key == self.primary_key else None,
            {c: how for c, how in self.sequences.items() if table.sequences.get(c) == how},
            [fk for fk in self.foreign_keys if fk in table.foreign_keys],
            [(s, fk) for s, fk in self.incoming if schema.tables.get(s.key) is s and fk in s.foreign_keys],
            [cols for name, cols in self.uniques.items() if table.uniques.get(name) == cols],
        )


_DATA = ("InsertStmt", "UpdateStmt", "DeleteStmt", "SelectStmt")


def _parse(sql: str, location: Location, sql_errors: list[tuple[int, str]]) -> list[Any]:
    """The statements in `sql`, and those inside its PL/pgSQL `DO` blocks; what does not parse is noted."""
    import pglast
    from pglast import ast

    try:
        parsed = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        sql_errors.append((location.line, str(exc)))
        return []
    nodes = []
    for raw in parsed:
        nodes.append(raw.stmt)
        if isinstance(raw.stmt, ast.DoStmt):
            for inner in _do_block_statements(raw.stmt, location, sql_errors):
                nodes += _parse(inner, location, sql_errors)
    return nodes


def _do_block_statements(stmt: Any, location: Location, sql_errors: list[tuple[int, str]]) -> list[str]:
    """The SQL statements a PL/pgSQL DO block runs, including `EXECUTE 'constant string'`."""
    import pglast

    options = {option.defname: getattr(option.arg, "sval", None) for option in stmt.args or ()}
    body = options.get("as")
    if body is None or (options.get("language") or "plpgsql").lower() != "plpgsql":
        return []
    tag = "$nilemig$"
    try:
        tree = pglast.parse_plpgsql(f"DO {tag}{body}{tag}")
    except pglast.parser.ParseError as exc:
        sql_errors.append((location.line, f"in a DO block: {exc}"))
        return []
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "PLpgSQL_stmt_execsql" in node:
                found.append(node["PLpgSQL_stmt_execsql"]["sqlstmt"]["PLpgSQL_expr"]["query"])
            elif "PLpgSQL_stmt_dynexecute" in node:
                constant = _string_constant(node["PLpgSQL_stmt_dynexecute"]["query"]["PLpgSQL_expr"]["query"])
                if constant is not None:
                    found.append(constant)
            for value in node.values():
                walk(value)

    walk(tree)
    return found


def _string_constant(expression: str) -> str | None:
    """The text of a SQL string literal ('...' or $$...$$), or None for anything computed."""
    import pglast
    from pglast import ast

    try:
        [raw] = pglast.parse_sql(f"SELECT {expression}")
    except (pglast.parser.ParseError, ValueError):
        return None
    value = raw.stmt.targetList[0].val
    return value.val.sval if isinstance(value, ast.A_Const) and isinstance(value.val, ast.String) else None
