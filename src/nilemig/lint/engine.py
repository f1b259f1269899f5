"""Runs the rules over a project's migrations: no database needed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.core import display_path, explain_errors
from nilemig.errors import NilemigError
from nilemig.lint.chain import Chain, MigrationFile, RenderFailure, read_chain
from nilemig.lint.registry import ERROR, RULES, Kind

# The rules (and SQLAlchemy, which they load through nilemig.nile) are imported where they run: a check that
# finds its answer in the cache needs none of them.
if TYPE_CHECKING:
    from nilemig.config import Project
    from nilemig.lint import squawk
    from nilemig.lint.cache import CheckCache
    from nilemig.lint.schema import BecameTenantAware, Location, Schema, Table
    from nilemig.lint.render import Rendered


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


class _Reporter:
    """Collects findings once each (one problem, one finding), minus the ignored ones."""

    def __init__(self, ignored: set[str]):
        self.ignored = ignored
        self.findings: dict[tuple[str, Path, int, str], Finding] = {}

    def __call__(self, code: str, message: str, migration: MigrationFile, line: int,
                 lines: frozenset[int] = frozenset(), severity: str | None = None) -> None:
        if code in self.ignored or any(code in migration.ignores(n) for n in {line, *lines}):
            return
        finding = Finding(code, severity or RULES[code].severity, message, migration.path, line)
        self.findings.setdefault((code, migration.path, line, message), finding)


def check(project: Project, only: set[Path] | None = None, with_squawk: bool | None = None,
          use_cache: bool = True) -> CheckResult:
    """Lint every migration; report findings in `only` (all files when None). `with_squawk`: add squawk's
    findings (None: as [tool.nilemig] squawk says). `use_cache`: reuse and keep what earlier runs rendered
    and found in .nilemig/cache/ (lint/cache.py)."""
    from nilemig.lint.render import migration_paths

    settings = tool_settings(project)
    if use_cache:
        from nilemig.lint.cache import CheckCache

        cache = CheckCache(project)
        paths = cache.layout().paths()
        cache.keys(paths)
        # The settings were checked when this result was stored; with squawk on, none was stored (see below).
        result_key = cache.result_key(settings, with_squawk)
        result = cache.result(result_key)
        if result is None:
            result, squawk_ran = _check_all(project, paths, settings, with_squawk, cache)
            if not squawk_ran:  # squawk's findings come from a program of its own, outside the key
                cache.store_result(result_key, result)
    else:
        result, _ = _check_all(project, migration_paths(project), settings, with_squawk, None)
    if only is not None:
        wanted = {os.path.realpath(p) for p in only}
        result.findings = [f for f in result.findings if os.path.realpath(f.path) in wanted]
    return result


def _check_all(project: Project, paths: list[Path], settings: dict[str, Any], with_squawk: bool | None,
               cache: CheckCache | None) -> tuple[CheckResult, bool]:
    """Every finding in `paths`, in chain order, rendering only what `cache` does not hold; and whether
    squawk ran."""
    from nilemig.lint import squawk
    from nilemig.lint.render import render

    report = _Reporter(configured_ignores(project, settings))
    with_squawk = squawk.enabled(settings, with_squawk, display_path(project.root / "pyproject.toml"))
    with explain_errors(project):
        chain = read_chain(paths)
    by_key = {m.key: m for m in chain.migrations}
    linter = squawk.Squawk() if with_squawk else None
    printed: list[tuple[Path, str]] = []

    known = chain.by_revision()
    loadable = all(down in known for m in chain.migrations for down in m.down_revisions)
    if loadable and paths:
        reused = cache.renders() if cache else {}
        rendered = render(project, chain.migrations, known=reused)
        if cache:
            cache.store_renders({key: rendered.of(key) for key in rendered.order if key not in reused})
        printed = list(rendered.printed.items())
        _check_statements(rendered, by_key, chain, report, linter)
        for found in linter.findings(project.root) if linter else ():
            report(found.code, found.message, found.migration, found.line, found.lines, found.severity)

    for rule in sorted(RULES.values(), key=lambda r: r.code):
        if rule.kind is Kind.CHAIN:
            for message, path, line in rule.check(chain):
                report(rule.code, message, by_key[os.path.realpath(path)], line)

    findings = list(report.findings.values())
    order = {m.path: i for i, m in enumerate(chain.migrations)}
    findings.sort(key=lambda f: (order.get(f.path, 0), f.line, f.code))
    return CheckResult(findings, len(chain.migrations), printed), with_squawk


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


def _check_statements(rendered: Rendered, by_key: dict[str, MigrationFile], chain: Chain, report: _Reporter,
                      linter: squawk.Squawk | None):
    """Statement rules over every rendered statement, following the schema migration by migration."""
    from nilemig.lint import rules
    from nilemig.lint.schema import Location, Schema, apply
    from nilemig.tenants import template_sql

    statement_rules = [r for r in sorted(RULES.values(), key=lambda r: r.code) if r.kind is Kind.STATEMENT]
    schema = Schema.with_nile_builtins()

    def run_rules(statement: rules.Statement, migration: MigrationFile, lines: frozenset[int]) -> None:
        for rule in statement_rules:
            for message in rule.check(statement):
                report(rule.code, message, migration, statement.location.line, lines)

    for key in rendered.order:
        migration = by_key[key]
        transitions: dict[tuple[str, str], _Transition] = {}
        changes: set[str] = set()
        for emitted in rendered.statements[key]:
            location = Location(migration.path, emitted.line)
            # A for_each_tenant step renders as a commented template: its SQL is checked as a step's,
            # which changes rows once per tenant, never the schema.
            step_sql = template_sql(emitted.sql)
            for node in _parse(emitted.sql if step_sql is None else step_sql, migration.path, location, chain):
                changes.add("data" if type(node).__name__ in _DATA else "schema")
                statement = rules.Statement(node, schema, location, emitted.existing_types,
                                            in_step=step_sql is not None)
                run_rules(statement, migration, emitted.lines)
                if linter:
                    linter.add(migration, emitted, statement)
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
                run_rules(rules.Statement(standing, schema, transition.location), migration, transition.lines)
        stop = rendered.stops.get(key)
        migration.changes = changes if stop is None else None
        if stop is not None:
            chain.render_failures.append(RenderFailure(migration.path, stop.line, stop.offline_only, stop.reason,
                                                       len(rendered.statements[key]), migration.upgrade_end))


def _parse(sql: str, path: Path, location: Location, chain: Chain) -> list[Any]:
    """The statements in `sql`, and those inside its PL/pgSQL `DO` blocks; what does not parse is noted."""
    import pglast
    from pglast import ast

    try:
        parsed = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        chain.sql_errors.append((path, location.line, str(exc)))
        return []
    nodes = []
    for raw in parsed:
        nodes.append(raw.stmt)
        if isinstance(raw.stmt, ast.DoStmt):
            for inner in _do_block_statements(raw.stmt, path, location, chain):
                nodes += _parse(inner, path, location, chain)
    return nodes


def _do_block_statements(stmt: Any, path: Path, location: Location, chain: Chain) -> list[str]:
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
        chain.sql_errors.append((path, location.line, f"in a DO block: {exc}"))
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
