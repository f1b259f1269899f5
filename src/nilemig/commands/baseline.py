"""`nilemig baseline`: one migration that creates what a database already has, recorded as applied there.

For a database whose tables were made without migrations (in the Nile console, by hand), or
that is ahead of its migrations. Alembic autogenerate does the reflecting, with the same
filters as `nilemig autogen` (Nile's built-ins are never part of it): it compares the
database with the schema the migrations build (nothing, when there are none), and the
operations that would undo the difference are exactly the ones that create it. What
SQLAlchemy cannot reflect (functions, triggers, ...) is listed in the file instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.autogenerate import renderers
from alembic.operations import ops

from nilemig import nile
from nilemig.core import (
    alembic_config,
    connection_heads,
    display_path,
    explain_errors,
    script_directory,
)
from nilemig.errors import NilemigError
from nilemig.keys import BOOKKEEPING_TABLES, VERSION_TABLE

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.engine import Connection

    from nilemig.config import Database, Project

NOT_REFLECTED = "# nilemig: not reflected"

# Objects of the current schema that Alembic cannot reflect, each as (kind, name) rows.
# Functions and sequences that belong to an extension, and Nile's own functions, are left out.
_UNREFLECTED = {
    "function": """
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace AND p.proname <> ALL (%(builtin)s)
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""",
    "trigger": """
        SELECT t.tgname || ' on ' || c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal""",
    "policy": """
        SELECT p.polname || ' on ' || c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = current_schema()::regnamespace""",
    "sequence": """
        SELECT c.relname FROM pg_class c
        WHERE c.relkind = 'S' AND c.relnamespace = current_schema()::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))""",
    "type": """
        SELECT t.typname || CASE t.typtype WHEN 'd' THEN ' (domain)' ELSE ' (composite)' END FROM pg_type t
        WHERE t.typnamespace = current_schema()::regnamespace AND t.typtype IN ('d', 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid AND d.deptype = 'e')""",
    "schema": """
        SELECT n.nspname FROM pg_namespace n
        WHERE n.nspname <> ALL (%(skipped_schemas)s) AND n.nspname NOT LIKE 'pg\\_%%'
          AND n.nspname <> current_schema()
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = n.oid AND d.deptype = 'e')""",
}
_VIEWS = """
    SELECT c.relname, c.relkind = 'm', pg_get_viewdef(c.oid) FROM pg_class c
    WHERE c.relkind IN ('v', 'm') AND c.relnamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
    ORDER BY c.oid"""


class NotReflectedOp(ops.MigrateOperation):
    """A note in the migration about an object the baseline does not create."""

    def __init__(self, kind: str, name: str):
        self.kind = kind
        self.name = name


@renderers.dispatch_for(NotReflectedOp)
def _render_not_reflected(autogen_context: Any, op: NotReflectedOp) -> str:
    return f"{NOT_REFLECTED}: {op.kind} {op.name} exists in the database; create it here by hand if you need it"


@dataclass
class BaselineResult:
    path: Path
    revision: str
    tables: list[str]
    not_reflected: list[str] = field(default_factory=list)  # "function add_one(integer)", ...
    models: Path | None = None


def baseline(project: Project, database: Database, message: str, models: bool = False,
             scratch_url: str | None = None) -> BaselineResult:
    """Write a migration creating what `database` has beyond the migrations, and record it as applied there."""
    from nilemig.database import connect

    config = alembic_config(project)
    scripts = script_directory(project, config)
    heads = tuple(scripts.get_heads())
    if len(heads) > 1:
        raise NilemigError(f"The migrations have {len(heads)} heads ({', '.join(heads)}): merge them first "
                           "(`alembic merge heads`), then baseline.")
    if models:
        models_path = _models_target(project)
    with connect(database) as connection:
        current = connection_heads(connection)
        if current != heads:
            raise NilemigError(
                f"The database is at {', '.join(current) or 'base'} but the migrations' head is "
                f"{', '.join(heads)}: run `nilemig up` first, so that the baseline holds only what the "
                "migrations do not create. Nothing was written.")
        at_head = _schema_at_head(project, scratch_url) if heads else None
        upgrade, downgrade, created = _creation_ops(connection, at_head)
        if not created and not upgrade.ops:
            raise NilemigError("Nothing to baseline: the database has nothing the migrations do not create "
                               "(Nile's built-in tables are never part of a baseline).")
        script = _write(project, config, scripts, message, heads, upgrade, downgrade, connection)
        _record_applied(project, connection, script, current)
    result = BaselineResult(Path(script.path), script.revision, created,
                            [f"{op.kind} {op.name}" for op in upgrade.ops if isinstance(op, NotReflectedOp)])
    if models:
        models_path.write_text(generate_models(database), encoding="utf-8")
        result.models = models_path
    return result


def _schema_at_head(project: Project, scratch_url: str | None) -> MetaData:
    """The tables the migrations build, reflected from a scratch database migrated to head."""
    from alembic import command
    from sqlalchemy import MetaData

    from nilemig.commands.verify import scratch_database
    from nilemig.database import connect
    from nilemig.keys import SETTINGS_KEY
    from nilemig.runsettings import RunSettings

    with scratch_database(project, scratch_url, keep=False) as scratch:
        config = alembic_config(project, scratch)
        config.attributes[SETTINGS_KEY] = RunSettings(on_notice=lambda message: None)
        with explain_errors(project):
            command.upgrade(config, "heads")
        metadata = MetaData()
        with connect(scratch) as connection:
            metadata.reflect(connection, only=lambda name, _: _is_own_table(name))
    return metadata


def _is_own_table(table: str) -> bool:
    return not nile.is_builtin_table(table) and table not in BOOKKEEPING_TABLES | {VERSION_TABLE}


def _creation_ops(connection: Connection, at_head: MetaData | None) -> tuple[ops.UpgradeOps, ops.DowngradeOps,
                                                                                list[str]]:
    """Operations creating what the database has beyond `at_head` (all of it, without migrations)."""
    from alembic.autogenerate import produce_migrations
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import MetaData

    target = at_head if at_head is not None else MetaData()
    context = MigrationContext.configure(connection, opts={
        "target_metadata": target, "include_name": nile.include_name, "include_object": nile.include_object,
        "compare_type": True})
    # The operations taking the database to `target` drop what it has beyond it: reversed, they create it.
    script = produce_migrations(context, target)
    creating = _flatten(script.downgrade_ops.ops)
    enums = _enums(connection, creating)
    tables = [op for op in creating if isinstance(op, ops.CreateTableOp)]
    ordered = _in_dependency_order(creating)
    ordered += _tenants_columns(connection, at_head)
    views = _views(connection)
    notes = [NotReflectedOp(kind, name) for kind, name in _unreflected(connection)]
    upgrade = ops.UpgradeOps([*notes, *(create for create, _ in enums), *ordered, *(create for create, _ in views)])
    downgrade = ops.DowngradeOps([*(drop for _, drop in reversed(views)), *(o.reverse() for o in reversed(ordered)),
                                  *(drop for _, drop in enums)])
    return upgrade, downgrade, [op.table_name for op in tables]


def _tenants_columns(connection: Connection, at_head: MetaData | None) -> list[ops.AddColumnOp]:
    """Columns the user added to Nile's `tenants` (autogenerate compares tenants only when the models have it)."""
    from sqlalchemy import Column, inspect, text

    known = set(nile.TENANTS_NILE_COLUMNS)
    if at_head is not None and nile.TENANTS_TABLE in at_head.tables:
        known |= {c.name for c in at_head.tables[nile.TENANTS_TABLE].columns}
    return [ops.AddColumnOp(nile.TENANTS_TABLE, Column(
                column["name"], column["type"], nullable=column["nullable"],
                server_default=text(column["default"]) if column.get("default") else None))
            for column in inspect(connection).get_columns(nile.TENANTS_TABLE) if column["name"] not in known]


def _flatten(operations: list[Any]) -> list[Any]:
    found = []
    for op in operations:
        found.extend(_flatten(op.ops) if isinstance(op, ops.ModifyTableOps) else [op])
    return found


def _in_dependency_order(creating: list[Any]) -> list[Any]:
    """Tables after the tables their foreign keys reference, each followed by its other operations."""
    from sqlalchemy import ForeignKeyConstraint

    tables = {op.table_name: op for op in creating if isinstance(op, ops.CreateTableOp)}
    references = {name: {element.target_fullname.rsplit(".", 1)[0].rsplit(".", 1)[-1]
                         for c in op.columns if isinstance(c, ForeignKeyConstraint) for element in c.elements}
                  & set(tables) - {name} for name, op in tables.items()}
    ordered: list[str] = []

    def place(name: str, visiting: frozenset[str]) -> None:
        if name in ordered or name in visiting:
            return
        for referenced in sorted(references[name]):
            place(referenced, visiting | {name})
        ordered.append(name)

    for name in tables:
        place(name, frozenset())
    rest = [op for op in creating if not isinstance(op, ops.CreateTableOp)]
    result = []
    for name in ordered:
        result.append(tables[name])
        result.extend(op for op in rest if getattr(op, "table_name", None) == name)
    return result + [op for op in rest if getattr(op, "table_name", None) not in tables]


def _enums(connection: Connection, creating: list[Any]) -> list[tuple[ops.ExecuteSQLOp, ops.ExecuteSQLOp]]:
    """CREATE TYPE / DROP TYPE for each enum of the current schema; tables then use them as they are.

    Several tables may share one enum: created by each table, it would be created twice.
    """
    from sqlalchemy import inspect
    from sqlalchemy.dialects import postgresql

    for op in creating:
        for column in getattr(op, "columns", ()):
            if isinstance(getattr(column, "type", None), postgresql.ENUM):
                column.type.create_type = False
    quote = connection.dialect.identifier_preparer.quote
    found = []
    for enum in inspect(connection).get_enums():
        if not enum["visible"]:
            continue
        labels = ", ".join("'" + label.replace("'", "''") + "'" for label in enum["labels"])
        found.append((ops.ExecuteSQLOp(f"CREATE TYPE {quote(enum['name'])} AS ENUM ({labels})"),
                      ops.ExecuteSQLOp(f"DROP TYPE {quote(enum['name'])}")))
    return found


def _views(connection: Connection) -> list[tuple[ops.ExecuteSQLOp, ops.ExecuteSQLOp]]:
    from sqlalchemy import text

    quote = connection.dialect.identifier_preparer.quote
    found = []
    for name, materialized, definition in connection.execute(text(_VIEWS)):
        kind = "MATERIALIZED VIEW" if materialized else "VIEW"
        found.append((ops.ExecuteSQLOp(f"CREATE {kind} {quote(name)} AS\n{definition.strip().rstrip(';')}"),
                      ops.ExecuteSQLOp(f"DROP {kind} {quote(name)}")))
    return found


def _unreflected(connection: Connection) -> Iterator[tuple[str, str]]:
    skipped = ["information_schema", "public", *sorted(nile.BUILTIN_SCHEMAS)]
    params = {"builtin": sorted(nile.BUILTIN_FUNCTIONS), "skipped_schemas": skipped}
    for kind, query in _UNREFLECTED.items():
        for (name,) in connection.exec_driver_sql(query, params):
            yield kind, name


def _write(project: Project, config: Any, scripts: Any, message: str, heads: tuple[str, ...],
           upgrade: ops.UpgradeOps, downgrade: ops.DowngradeOps, connection: Connection) -> Any:
    from alembic.autogenerate import render
    from alembic.autogenerate.api import AutogenContext
    from alembic.runtime.migration import MigrationContext
    from alembic.util import rev_id

    migration = ops.MigrationScript(rev_id(), upgrade, downgrade)
    template_args: dict[str, Any] = {"config": config}
    # The prefixes Alembic's EnvironmentContext would give a revision it renders.
    autogen_context = AutogenContext(MigrationContext.configure(connection), opts={
        "sqlalchemy_module_prefix": "sa.", "alembic_module_prefix": "op.", "user_module_prefix": None,
        "render_item": None})
    render._render_python_into_templatevars(autogen_context, migration, template_args)
    with explain_errors(project):
        script = scripts.generate_revision(migration.rev_id, message, head=heads[0] if heads else None,
                                           **template_args)
    return script


def _record_applied(project: Project, connection: Connection, script: Any, current: tuple[str, ...]) -> None:
    """Stamp the new revision and record it in the ledger as a baseline, in one transaction, under the lock."""
    from alembic.runtime.migration import MigrationContext

    from nilemig import ledger
    from nilemig.runlock import migration_lock
    from nilemig.runsettings import RunSettings

    settings = RunSettings()
    scripts = script_directory(project, alembic_config(project))
    connection.commit()
    with migration_lock(connection, settings.lock_wait_seconds, settings.on_notice):
        ledger.ensure(connection, scripts, ledger.read_state(connection))
        MigrationContext.configure(connection).stamp(scripts, script.revision)
        ledger.record(connection, script.revision, script.path, None, ledger.BASELINE)
        connection.commit()


def _models_target(project: Project) -> Path:
    """models.py, which `--models` may write only when it is missing or still nilemig's untouched template."""
    from nilemig.commands.init import template_files

    path = project.root / "models.py"
    if path.exists() and path.read_text(encoding="utf-8") != template_files("project")["models.py"]:
        raise NilemigError(f"{display_path(path)} has models of its own, and --models would replace it: move it "
                           "away (or leave out --models), then run again. Nothing was written.")
    return path


def generate_models(database: Database) -> str:
    """models.py for what the database has, written by sqlacodegen, with Nile's tables as nilemig has them."""
    from sqlalchemy import MetaData

    from nilemig.database import connect

    generator_class = _models_generator()
    metadata = MetaData()
    with connect(database) as connection:
        # Views are left out: autogenerate compares tables, and would take a view model for a missing table.
        metadata.reflect(connection, only=lambda name, _: name == nile.TENANTS_TABLE or _is_own_table(name))
        _restore_expression_indexes(connection, metadata)
        # nojoined: a tenant-aware table is not a subclass of `tenants` although its key references it.
        return generator_class(metadata, connection, ["nojoined"]).generate()


def _restore_expression_indexes(connection: Connection, metadata: MetaData) -> None:
    """Put back the expressions (`lower(name)`) that reflecting a Table leaves out of an index."""
    from sqlalchemy import Index, inspect, text

    inspector = inspect(connection)
    for table in metadata.tables.values():
        for reflected in inspector.get_indexes(table.name):
            if None not in reflected["column_names"]:
                continue
            table.indexes -= {index for index in table.indexes if index.name == reflected["name"]}
            Index(reflected["name"], *(table.c[e] if e in table.c else text(e) for e in reflected["expressions"]),
                  unique=reflected["unique"], _table=table)


def _models_generator() -> type:
    """sqlacodegen's declarative generator, taught define_tenants and TenantAware (built on first use:
    sqlacodegen is the optional `baseline` extra)."""
    try:
        from sqlacodegen.generators import DeclarativeGenerator
        from sqlacodegen.models import ModelClass
    except ImportError:
        raise NilemigError("--models writes models.py with sqlacodegen, which is not installed: "
                           "pip install 'nilemig[baseline]'. Nothing was written.") from None

    class NileModelsGenerator(DeclarativeGenerator):
        def should_ignore_table(self, table: Any) -> bool:
            return super().should_ignore_table(table) or not (table.name == nile.TENANTS_TABLE or _is_own_table(table.name))

        def generate_models(self) -> list[Any]:
            models = super().generate_models()
            tenants = next((m for m in models if m.table.name == nile.TENANTS_TABLE), None)
            for model in models:
                if not isinstance(model, ModelClass):
                    continue
                model.relationships = [r for r in model.relationships if r.target is not tenants]
                if _is_tenant_aware(model.table):
                    # TenantAware declares tenant_id, its key and its reference to tenants.
                    model.columns = [c for c in model.columns if c.column.name != nile.TENANT_ID]
                    model.table.constraints -= {
                        fk for fk in model.table.foreign_key_constraints
                        if fk.column_keys == [nile.TENANT_ID] and fk.elements[0].target_fullname == "tenants.id"}
            self.add_literal_import("nilemig.nile", "define_tenants")
            if any(_is_tenant_aware(m.table) for m in models if isinstance(m, ModelClass)):
                self.add_literal_import("nilemig.nile", "TenantAware")
            return models

        def render_models(self, models: list[Any]) -> str:
            rendered = super().render_models([m for m in models if m.table.name != nile.TENANTS_TABLE])
            extra = [c for c in self.metadata.tables[nile.TENANTS_TABLE].columns
                     if c.name not in nile.TENANTS_NILE_COLUMNS] if nile.TENANTS_TABLE in self.metadata.tables else []
            columns = "".join(f", {self.render_column(c, True, is_table=True)}" for c in extra)
            return f"# Nile's built-in tenants table, as Nile defines it.\ntenants = define_tenants({self.base_class_name}.metadata{columns})\n\n\n{rendered}"

        def render_index(self, index: Any) -> str:
            from sqlacodegen.utils import render_callable
            from sqlalchemy import Column

            if all(isinstance(element, Column) for element in index.expressions):
                return super().render_index(index)
            self.add_literal_import("sqlalchemy", "text")
            elements = [repr(e.name) if isinstance(e, Column) else f"text({str(e)!r})" for e in index.expressions]
            return render_callable("Index", repr(index.name), *elements,
                                   kwargs={"unique": True} if index.unique else {})

        def render_class_declaration(self, model: Any) -> str:
            if _is_tenant_aware(model.table):
                return f"class {model.name}(TenantAware, {self.base_class_name}):"
            return super().render_class_declaration(model)

    return NileModelsGenerator


def _is_tenant_aware(table: Any) -> bool:
    """Nile's rule: a table with a `tenant_id` column, in its primary key, referencing tenants.id."""
    column = table.columns.get(nile.TENANT_ID)
    return (column is not None and column.primary_key and table.name != nile.TENANTS_TABLE
            and any(fk.target_fullname == f"{nile.TENANTS_TABLE}.id" for fk in column.foreign_keys))
