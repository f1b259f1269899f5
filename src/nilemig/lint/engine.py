"""Runs the rules over a project's migrations: no database needed."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.core import display_path, explain_errors
from nilemig.errors import NilemigError
from nilemig.lint import rules, squawk  # rules: registers the rules
from nilemig.lint.chain import MigrationFile, read_chain
from nilemig.lint.registry import ERROR, RULES, Kind
from nilemig.lint.schema import Location, Schema, apply
from nilemig.tenants import template_sql

if TYPE_CHECKING:
    from nilemig.config import Project


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

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != ERROR]


def versions_dir(project: Project) -> Path:
    from nilemig.core import alembic_config

    location = alembic_config(project).get_main_option("script_location")
    return Path(location) / "versions"


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
    pyproject = project.root / "pyproject.toml"
    ignored = set(settings.get("ignore", []))
    unknown = sorted(c for c in ignored - set(RULES) if not c.startswith(squawk.PREFIX))
    if unknown:
        raise NilemigError(f"{display_path(pyproject)}: [tool.nilemig] ignore names unknown rule(s) "
                           f"{', '.join(unknown)}. `nilemig rules` lists them.")
    return ignored


def check(project: Project, only: set[Path] | None = None, with_squawk: bool | None = None) -> CheckResult:
    """Lint every migration; report findings in `only` (all files when None). `with_squawk`: add squawk's
    findings (None: as [tool.nilemig] squawk says)."""
    import pglast

    from nilemig.lint.render import render

    paths = sorted(p for p in versions_dir(project).glob("*.py") if p.name != "__init__.py")
    with explain_errors(project):
        chain = read_chain(paths)
    by_key = {m.key: m for m in chain.migrations}
    settings = tool_settings(project)
    ignored = configured_ignores(project, settings)
    linter = squawk.Squawk() if squawk.enabled(settings, with_squawk, display_path(project.root / "pyproject.toml")) else None
    findings: list[Finding] = []

    def report(code: str, message: str, migration: MigrationFile, line: int, lines: frozenset[int] = frozenset(),
               severity: str | None = None):
        if code in ignored or any(code in migration.ignores(n) for n in {line, *lines}):
            return
        findings.append(Finding(code, severity or RULES[code].severity, message, migration.path, line))

    known = chain.by_revision()
    loadable = all(down in known for m in chain.migrations for down in m.down_revisions)
    if loadable and paths:
        with explain_errors(project):
            rendered = render(project, {str(m.path): m.key for m in chain.migrations},
                              {m.key: m.revision for m in chain.migrations if m.revision})
        chain.render_failures = [(by_key[rendered.keys[loc.path]].path, loc.line, why)
                                 for loc, why in rendered.failures]
        statement_rules = [r for r in sorted(RULES.values(), key=lambda r: r.code) if r.kind is Kind.STATEMENT]
        schema = Schema.with_nile_builtins()
        for emitted in rendered.statements:
            migration = by_key[rendered.keys[emitted.location.path]]
            location = Location(migration.path, emitted.location.line)
            # A for_each_tenant step renders as a commented template: its SQL is checked as a step's.
            step_sql = template_sql(emitted.sql)
            try:
                parsed = pglast.parse_sql(emitted.sql if step_sql is None else step_sql)
            except pglast.parser.ParseError as exc:
                chain.sql_errors.append((migration.path, location.line, str(exc)))
                continue
            for raw in parsed:
                statement = rules.Statement(raw.stmt, schema, location, in_step=step_sql is not None)
                for rule in statement_rules:
                    for message in rule.check(statement):
                        report(rule.code, message, migration, location.line, emitted.lines)
                if step_sql is None:
                    apply(schema, raw.stmt, location)
                if linter:
                    linter.add(migration, emitted, statement)
        for found in linter.findings(project.root) if linter else ():
            report(found.code, found.message, found.migration, found.line, found.lines, found.severity)

    for rule in sorted(RULES.values(), key=lambda r: r.code):
        if rule.kind is Kind.CHAIN:
            for message, path, line in rule.check(chain):
                report(rule.code, message, by_key[os.path.realpath(path)], line)

    if only is not None:
        wanted = {os.path.realpath(p) for p in only}
        findings = [f for f in findings if os.path.realpath(f.path) in wanted]
    order = {m.path: i for i, m in enumerate(chain.migrations)}
    findings.sort(key=lambda f: (order.get(f.path, 0), f.line, f.code))
    return CheckResult(findings, len(chain.migrations))
