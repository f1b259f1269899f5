"""nilemig's lint rules. Each rule is one function here: its decorator holds the code,
severity, title and examples; its docstring is the docs paragraph (`nilemig rules CODE`).

Examples are migration bodies (after the revision header). Several migrations in
one example are separated by a `# --- next migration ---` line; a migration that
sets its own `down_revision` keeps it, the others follow the previous one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pglast import ast, enums

from nilemig import nile
from nilemig.core import display_path
from nilemig.lint.chain import Chain, RenderFailure
from nilemig.lint.registry import ERROR, WARNING, chain_rule, statement_rule
from nilemig.lint.schema import (
    BecameTenantAware,
    ForeignKey,
    Location,
    Schema,
    Table,
    alter_commands,
    foreign_keys,
    is_widening,
    names,
    relation_display,
    relation_key,
    sql_type_name,
    table_from_create,
    type_name,
    unique_keys,
    uses_sequence,
)

AT = enums.AlterTableType
CT = enums.ConstrType
NEXT = "# --- next migration ---"


@dataclass
class Statement:
    """One SQL statement a migration runs, with the schema as it was just before it."""

    node: Any  # a pglast statement node, or a BecameTenantAware at the end of a migration
    schema: Schema
    location: Location
    existing_types: dict[str, str] = field(default_factory=dict)  # column -> what `existing_type=` said
    in_step: bool = False  # run by for_each_tenant, once per tenant in its own transaction

    @cached_property
    def _created(self) -> Table | None:
        return table_from_create(self.node, self.location) if isinstance(self.node, ast.CreateStmt) else None

    def created_table(self) -> Table | None:
        return self._created

    def target_table(self) -> Table | None:
        """The existing table an ALTER / CREATE INDEX / INSERT / UPDATE / DELETE works on."""
        relation = getattr(self.node, "relation", None)
        return self.schema.get(relation) if isinstance(relation, ast.RangeVar) else None


def _is_tenants(relation: ast.RangeVar) -> bool:
    return relation_key(relation) == ("public", nile.TENANTS_TABLE)


# --- Nile: tenant-aware tables -------------------------------------------------------------------


@statement_rule(
    "NILE001", ERROR, "Tenant-aware table whose primary key lacks tenant_id",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), nullable=False),
        )
    """,
    good="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), primary_key=True),
        )
    """,
)
def tenant_primary_key(stmt: Statement) -> Iterator[str]:
    """A table with a `tenant_id uuid` column is tenant-aware, and Nile requires its primary key to
    include `tenant_id` (in any position): rows are placed by tenant. Nile rejects the table
    otherwise. Put `tenant_id` in the primary key (the `TenantAware` mixin does). A table that gets
    `tenant_id` later is judged from then on: re-key it in the same migration."""
    table = stmt.created_table()
    if table is not None and table.tenant_aware and nile.TENANT_ID not in table.primary_key:
        key = f"({', '.join(table.primary_key)})" if table.primary_key else "no primary key"
        yield f"tenant-aware table {table.display()!r} has {key}; Nile requires tenant_id in its primary key"
    if isinstance(stmt.node, ast.AlterTableStmt):
        target = stmt.target_table()
        for cmd in alter_commands(stmt.node, AT.AT_AddConstraint):
            keys = names(cmd.def_.keys)
            if cmd.def_.contype == CT.CONSTR_PRIMARY and target is not None and target.tenant_aware \
                    and nile.TENANT_ID not in keys:
                yield (f"primary key ({', '.join(keys)}) on tenant-aware table {target.display()!r} "
                       "lacks tenant_id; Nile requires it")
    if isinstance(stmt.node, BecameTenantAware) and stmt.node.primary_key is not None \
            and nile.TENANT_ID not in stmt.node.primary_key:
        key = f"({', '.join(stmt.node.primary_key)})" if stmt.node.primary_key else "no primary key"
        yield (f"table {stmt.node.table.display()!r} becomes tenant-aware here but keeps {key}; "
               "Nile requires tenant_id in its primary key")


@statement_rule(
    "NILE002", ERROR, "tenant_id column that is not uuid",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Integer, primary_key=True),
        )
    """,
    good="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
    """,
)
def tenant_id_type(stmt: Statement) -> Iterator[str]:
    """Nile reserves the column name `tenant_id` for the tenant key, which is a `uuid`
    referencing `tenants(id)`. A `tenant_id` of any other type is rejected."""
    columns: list[tuple[str, str]] = []
    table = stmt.created_table()
    if table is not None:
        columns.append((table.display(), table.columns.get(nile.TENANT_ID, "uuid")))
    if isinstance(stmt.node, ast.AlterTableStmt):
        where = relation_display(stmt.node.relation)
        for cmd in alter_commands(stmt.node, AT.AT_AddColumn):
            if cmd.def_.colname == nile.TENANT_ID:
                columns.append((where, type_name(cmd.def_.typeName)))
        for cmd in alter_commands(stmt.node, AT.AT_AlterColumnType):
            if cmd.name == nile.TENANT_ID:
                columns.append((where, type_name(cmd.def_.typeName)))
    for where, kind in columns:
        if kind != "uuid":
            yield f"{where}.tenant_id is {kind}; Nile requires tenant_id to be uuid"


@statement_rule(
    "NILE003", ERROR, "Sequence, SERIAL or identity column on a tenant-aware table",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
    """,
    good="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()")),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
    """,
)
def tenant_sequences(stmt: Statement) -> Iterator[str]:
    """Nile does not support sequences on tenant-aware tables, so `SERIAL`/`BIGSERIAL`, identity
    columns, `DEFAULT nextval(...)` and SQLAlchemy's autoincrementing integer primary keys all
    fail there. Use `uuid` keys with `gen_random_uuid()` or `public.uuid_generate_v7()`."""
    table = stmt.created_table()
    if table is not None and table.tenant_aware:
        for element in stmt.node.tableElts or ():
            if isinstance(element, ast.ColumnDef) and (how := uses_sequence(element)):
                yield f"{table.display()}.{element.colname} uses a sequence ({how}); Nile's tenant tables cannot"
    if isinstance(stmt.node, ast.AlterTableStmt):
        target = stmt.target_table()
        if target is not None and target.tenant_aware:
            for cmd in alter_commands(stmt.node, AT.AT_AddColumn):
                if how := uses_sequence(cmd.def_):
                    yield f"{target.display()}.{cmd.def_.colname} uses a sequence ({how}); Nile's tenant tables cannot"
            for cmd in alter_commands(stmt.node, AT.AT_AddIdentity):
                yield f"{target.display()}.{cmd.name} becomes an identity column; Nile's tenant tables cannot"
    if isinstance(stmt.node, BecameTenantAware):
        for column, how in stmt.node.sequences.items():
            yield (f"{stmt.node.table.display()}.{column} uses a sequence ({how}) and the table becomes "
                   "tenant-aware here; Nile's tenant tables cannot")
    if isinstance(stmt.node, ast.CreateSeqStmt):
        for option in stmt.node.options or ():
            if option.defname == "owned_by":
                parts = names(option.arg)
                owner = stmt.schema.tables.get(("public", parts[0]) if len(parts) == 2 else tuple(parts[:2]))
                if owner is not None and owner.tenant_aware:
                    yield f"sequence owned by tenant-aware table {owner.display()!r}; Nile's tenant tables cannot"


def _foreign_key_pairs(stmt: Statement) -> Iterator[tuple[Table, ForeignKey, Table | None]]:
    """(source table, foreign key, target table or None when unknown) for every FK a statement adds, or
    every FK from or to a table that becomes tenant-aware."""
    table = stmt.created_table()
    if table is not None:
        for fk in table.foreign_keys:
            target = table if relation_key(fk.target) == table.key else stmt.schema.get(fk.target)
            yield table, fk, target
    if isinstance(stmt.node, ast.AlterTableStmt) and (source := stmt.target_table()) is not None:
        elements = [c.def_ for c in alter_commands(stmt.node, AT.AT_AddConstraint, AT.AT_AddColumn)]
        for fk in foreign_keys(source.name, elements):
            yield source, fk, stmt.schema.get(fk.target)
    if isinstance(stmt.node, BecameTenantAware):
        for fk in stmt.node.foreign_keys:
            yield stmt.node.table, fk, stmt.schema.get(fk.target)
        for source, fk in stmt.node.incoming:
            yield source, fk, stmt.node.table


@statement_rule(
    "NILE004", ERROR, "Foreign key between tenant-aware tables without tenant_id",
    bad="""
    def upgrade():
        op.create_table(
            "projects",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
        op.create_table(
            "tasks",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("project_id", sa.Uuid),
            sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
        )
    """,
    good="""
    def upgrade():
        op.create_table(
            "projects",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
        op.create_table(
            "tasks",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("project_id", sa.Uuid),
            sa.ForeignKeyConstraint(["tenant_id", "project_id"], ["projects.tenant_id", "projects.id"]),
        )
    """,
)
def tenant_to_tenant_fk(stmt: Statement) -> Iterator[str]:
    """A foreign key from one tenant-aware table to another must be composite and include
    `tenant_id` on both sides, so that a row can only point at rows of its own tenant."""
    for source, fk, target in _foreign_key_pairs(stmt):
        if source.tenant_aware and target is not None and target.tenant_aware and not (
            nile.TENANT_ID in fk.columns and nile.TENANT_ID in (fk.target_columns or target.primary_key)
        ):
            yield (f"foreign key {source.display()}({', '.join(fk.columns)}) -> {target.display()} "
                   "must include tenant_id on both sides")


@statement_rule(
    "NILE005", ERROR, "Foreign key from a tenant-aware table to a shared table",
    bad="""
    def upgrade():
        op.create_table("plans", sa.Column("id", sa.Uuid, primary_key=True))
        op.create_table(
            "subscriptions",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("plan_id", sa.Uuid, sa.ForeignKey("plans.id")),
        )
    """,
    good="""
    def upgrade():
        op.create_table("plans", sa.Column("id", sa.Uuid, primary_key=True))
        op.create_table(
            "subscriptions",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, sa.ForeignKey("tenants.id"), primary_key=True),
            sa.Column("plan_id", sa.Uuid),
        )
    """,
)
def tenant_to_shared_fk(stmt: Statement) -> Iterator[str]:
    """Nile does not support foreign keys from a tenant-aware table to a shared table (one
    without `tenant_id`); the one exception is `tenants(id)` itself. Keep the reference as a
    plain column and check it in the application."""
    for source, fk, target in _foreign_key_pairs(stmt):
        if source.tenant_aware and target is not None and not target.tenant_aware and not _is_tenants(fk.target):
            yield (f"foreign key {source.display()}({', '.join(fk.columns)}) -> shared table "
                   f"{target.display()!r}: Nile supports tenant -> shared foreign keys only to tenants(id)")


@statement_rule(
    "NILE006", WARNING, "Foreign key from a shared table to a tenant-aware table",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
        op.create_table(
            "audit",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("todo_tenant", sa.Uuid),
            sa.Column("todo_id", sa.Uuid),
            sa.ForeignKeyConstraint(["todo_tenant", "todo_id"], ["todos.tenant_id", "todos.id"]),
        )
    """,
    good="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
        )
        op.create_table(
            "audit",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("todo_tenant", sa.Uuid),
            sa.Column("todo_id", sa.Uuid),
        )
    """,
)
def shared_to_tenant_fk(stmt: Statement) -> Iterator[str]:
    """Nile does not document foreign keys from a shared table to a tenant-aware one; they may
    be rejected or slow. Prefer keeping such references without a constraint."""
    for source, _fk, target in _foreign_key_pairs(stmt):
        if not source.tenant_aware and target is not None and target.tenant_aware:
            yield (f"foreign key from shared table {source.display()!r} to tenant-aware table "
                   f"{target.display()!r} is not documented by Nile")


@statement_rule(
    "NILE011", WARNING, "Unique constraint or index on a tenant-aware table without tenant_id",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("slug", sa.Text),
        )
        op.create_index("todos_slug", "todos", ["slug"], unique=True)
    """,
    good="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("slug", sa.Text),
        )
        op.create_index("todos_slug", "todos", ["tenant_id", "slug"], unique=True)
    """,
)
def tenant_unique_without_tenant_id(stmt: Statement) -> Iterator[str]:
    """On a tenant-aware table a unique constraint or index should include `tenant_id`: rows
    of different tenants may live apart, so uniqueness across tenants cannot be enforced
    (unconfirmed by Nile's docs, hence a warning). Make it unique per tenant."""
    keys: list[tuple[str, tuple[str, ...]]] = []
    table = stmt.created_table()
    if table is not None and table.tenant_aware:
        keys += [(table.display(), k) for k in table.uniques.values()]
    target = stmt.target_table()
    if target is not None and target.tenant_aware:
        if isinstance(stmt.node, ast.IndexStmt) and stmt.node.unique:
            keys.append((target.display(), names(stmt.node.indexParams)))
        if isinstance(stmt.node, ast.AlterTableStmt):
            added = [c.def_ for c in alter_commands(stmt.node, AT.AT_AddConstraint, AT.AT_AddColumn)]
            keys += [(target.display(), k) for _, k in unique_keys(target.name, added)]
    if isinstance(stmt.node, BecameTenantAware):
        keys += [(stmt.node.table.display(), k) for k in stmt.node.uniques]
    for where, columns in keys:
        if nile.TENANT_ID not in columns:
            yield f"unique ({', '.join(columns)}) on tenant-aware table {where!r} does not include tenant_id"


@statement_rule(
    "NILE012", WARNING, "Data written to a tenant-aware table inside a migration",
    bad="""
    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("done", sa.Boolean),
        )
        op.execute("UPDATE todos SET done = false")
    """,
    good="""
    from nilemig.tenants import for_each_tenant

    def upgrade():
        op.create_table(
            "todos",
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("tenant_id", sa.Uuid, primary_key=True),
            sa.Column("done", sa.Boolean),
        )
        for_each_tenant("todos not done", "UPDATE todos SET done = false WHERE done IS NULL")
    """,
)
def tenant_data_writes(stmt: Statement) -> Iterator[str]:
    """Nile does not let one transaction write to tenant-aware and shared tables together, nor to
    several tenants, and Alembic's `alembic_version` is shared: a migration that writes tenant rows
    can fail when the version is bumped in the same transaction. Use a server default, or put the
    data change in `for_each_tenant("name", "UPDATE ...")` (`from nilemig.tenants import
    for_each_tenant`): nilemig runs it after the migration commits, once per tenant, each tenant in its
    own transaction under `SET LOCAL nile.tenant_id`, exactly once and resumable."""
    if isinstance(stmt.node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)) and not stmt.in_step:
        target = stmt.target_table()
        if target is not None and target.tenant_aware:
            verb = type(stmt.node).__name__.removesuffix("Stmt").upper()
            yield (f"{verb} on tenant-aware table {target.display()!r} in the same transaction as the version "
                   "bump; use for_each_tenant")


def _pinned_tenant_ids(node: Any) -> Iterator[str]:
    """Literal tenant ids a statement compares tenant_id with, sets it to, or inserts."""
    from pglast.visitors import Visitor

    def literal(value: Any) -> str | None:
        if isinstance(value, ast.TypeCast):
            value = value.arg
        inner = getattr(value, "val", None) if isinstance(value, ast.A_Const) else None
        return getattr(inner, "sval", None)

    def is_tenant_id(value: Any) -> bool:
        return isinstance(value, ast.ColumnRef) and names(value.fields)[-1:] == (nile.TENANT_ID,)

    found: list[str] = []

    class Pins(Visitor):
        def visit_A_Expr(self, ancestors: Any, expr: ast.A_Expr) -> None:
            for column, other in ((expr.lexpr, expr.rexpr), (expr.rexpr, expr.lexpr)):
                if is_tenant_id(column):
                    values = other if isinstance(other, tuple) else (other,)  # IN (...) lists
                    found.extend(v for v in map(literal, values) if v is not None)

        def visit_ResTarget(self, ancestors: Any, target: ast.ResTarget) -> None:
            if target.name == nile.TENANT_ID and (value := literal(target.val)) is not None:
                found.append(value)

    Pins()(node)
    if isinstance(node, ast.InsertStmt) and node.selectStmt is not None:
        columns = [c.name for c in node.cols or ()]
        if nile.TENANT_ID in columns:
            index = columns.index(nile.TENANT_ID)
            for row in node.selectStmt.valuesLists or ():
                if index < len(row) and (value := literal(row[index])) is not None:
                    found.append(value)
    return iter(found)


@statement_rule(
    "NILE013", ERROR, "for_each_tenant step that writes a shared table or pins a tenant_id",
    bad="""
    from nilemig.tenants import for_each_tenant

    def upgrade():
        op.create_table("plans", sa.Column("id", sa.Uuid, primary_key=True), sa.Column("label", sa.Text))
        for_each_tenant("label plans", "UPDATE plans SET label = 'free' WHERE label IS NULL")
    """,
    good="""
    from nilemig.tenants import for_each_tenant

    def upgrade():
        op.create_table("plans", sa.Column("id", sa.Uuid, primary_key=True), sa.Column("label", sa.Text))
        op.execute("UPDATE plans SET label = 'free' WHERE label IS NULL")
        op.create_table("notes", sa.Column("tenant_id", sa.Uuid, primary_key=True), sa.Column("plan", sa.Text))
        for_each_tenant("notes on the free plan", "UPDATE notes SET plan = 'free' WHERE plan IS NULL")
    """,
)
def step_outside_its_tenant(stmt: Statement) -> Iterator[str]:
    """A `for_each_tenant` step runs once per tenant, in a transaction under that tenant's
    `nile.tenant_id` that also records the tenant's progress in a tenant-aware table. Writing a
    shared table there mixes shared and tenant writes in one transaction, which Nile rejects, and
    would repeat the write once per tenant; change shared tables in the migration itself. A literal
    `tenant_id` in a step matches one tenant at most, in every tenant's run: the tenant context
    already scopes the step's queries to the tenant being migrated, so leave `tenant_id` out, or
    narrow the tenants with `for_each_tenant(..., tenants="SELECT id FROM tenants WHERE ...")`."""
    if not stmt.in_step:
        return
    if isinstance(stmt.node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)):
        target = stmt.target_table()
        if target is not None and not target.tenant_aware:
            verb = type(stmt.node).__name__.removesuffix("Stmt").upper()
            yield f"for_each_tenant step writes shared table {target.display()!r} ({verb}) once per tenant"
    for value in _pinned_tenant_ids(stmt.node):
        yield f"for_each_tenant step pins tenant_id to the literal {value!r}; the tenant context already scopes it"


# --- Nile: unsupported statements and built-ins --------------------------------------------------

_UNSUPPORTED = {
    ast.CreateFunctionStmt: "CREATE FUNCTION / PROCEDURE",
    ast.CreateTrigStmt: "CREATE TRIGGER",
    ast.CreateEventTrigStmt: "CREATE EVENT TRIGGER",
    ast.CreatePolicyStmt: "CREATE POLICY",
    ast.CreateRoleStmt: "CREATE ROLE / USER",
    ast.CreatedbStmt: "CREATE DATABASE",
    ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
    ast.CopyStmt: "COPY",
}


@statement_rule(
    "NILE007", ERROR, "Statement Nile does not support",
    bad="""
    def upgrade():
        op.execute("CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
    """,
    good="""
    def upgrade():
        op.add_column("account", sa.Column("updated", sa.DateTime, server_default=sa.func.now()))
    """,
)
def unsupported_statement(stmt: Statement) -> Iterator[str]:
    """Nile rejects `CREATE FUNCTION`/`PROCEDURE`, `CREATE TRIGGER`, `CREATE POLICY`,
    `CREATE ROLE`/`USER`, `CREATE DATABASE`, `CREATE TABLESPACE` and `COPY`. Keep that logic in
    the application (timestamps via server defaults, access rules via tenant context)."""
    for node_type, what in _UNSUPPORTED.items():
        if isinstance(stmt.node, node_type):
            if isinstance(stmt.node, ast.CreateFunctionStmt):
                what = "CREATE PROCEDURE" if stmt.node.is_procedure else "CREATE FUNCTION"
            yield f"{what} is not supported on Nile"


@statement_rule(
    "NILE008", ERROR, "CASCADE",
    bad="""
    def upgrade():
        op.execute("DROP TABLE account CASCADE")
    """,
    good="""
    def upgrade():
        op.drop_table("account")
    """,
)
def cascade(stmt: Statement) -> Iterator[str]:
    """Nile does not support `CASCADE` on drops (or `TRUNCATE ... CASCADE`). Drop dependent
    objects explicitly, in order, so the migration says what it removes."""
    behaviours = [getattr(stmt.node, "behavior", None)]
    if isinstance(stmt.node, ast.AlterTableStmt):
        behaviours += [c.behavior for c in stmt.node.cmds or ()]
    if enums.DropBehavior.DROP_CASCADE in behaviours:
        yield "CASCADE is not supported on Nile; drop dependent objects explicitly"


@statement_rule(
    "NILE009", ERROR, "Storage parameters or tablespace",
    bad="""
    def upgrade():
        op.execute("CREATE TABLE events (id uuid PRIMARY KEY) WITH (fillfactor = 70)")
    """,
    good="""
    def upgrade():
        op.create_table("events", sa.Column("id", sa.Uuid, primary_key=True))
    """,
)
def storage_parameters(stmt: Statement) -> Iterator[str]:
    """Nile manages storage itself: `WITH (fillfactor=...)` and other storage parameters, and
    `TABLESPACE`, on tables and indexes are not supported."""
    node = stmt.node
    if isinstance(node, (ast.CreateStmt, ast.IndexStmt)):
        if node.options:
            yield f"storage parameters WITH ({', '.join(o.defname for o in node.options)}) are not supported on Nile"
        if getattr(node, "tablespacename", None) or getattr(node, "tableSpace", None):
            yield "TABLESPACE is not supported on Nile"
    if isinstance(node, ast.AlterTableStmt):
        if alter_commands(node, AT.AT_SetRelOptions, AT.AT_ResetRelOptions, AT.AT_ReplaceRelOptions):
            yield "ALTER TABLE ... SET (storage parameters) is not supported on Nile"
        if alter_commands(node, AT.AT_SetTableSpace):
            yield "ALTER TABLE ... SET TABLESPACE is not supported on Nile"


_TENANTS_COLUMN_CHANGES = (AT.AT_DropColumn, AT.AT_AlterColumnType, AT.AT_ColumnDefault, AT.AT_DropNotNull,
                           AT.AT_SetNotNull, AT.AT_AddIdentity, AT.AT_DropIdentity)


def _relations(node: Any) -> list[tuple[str, str]]:
    if isinstance(node, ast.DropStmt) and node.removeType in (enums.ObjectType.OBJECT_TABLE,
                                                               enums.ObjectType.OBJECT_INDEX):
        return [(p[0], p[1]) if len(p) > 1 else ("public", p[0]) for p in (names(o) for o in node.objects or ())]
    if isinstance(node, ast.TruncateStmt):
        return [relation_key(r) for r in node.relations or ()]
    relation = getattr(node, "relation", None)
    return [relation_key(relation)] if isinstance(relation, ast.RangeVar) else []


@statement_rule(
    "NILE010", ERROR, "DDL on Nile's built-in objects",
    bad="""
    def upgrade():
        op.drop_column("tenants", "name")
    """,
    good="""
    def upgrade():
        op.add_column("tenants", sa.Column("plan", sa.Text))
    """,
)
def builtin_objects(stmt: Statement) -> Iterator[str]:
    """Nile owns the `tenants` table (you may add columns to it, not drop, retype or alter its
    own), the `users`, `auth` and `nile_ddl` schemas, and `distributed_transactions`. A migration
    that creates, drops or alters them is rejected by Nile or breaks it. Reference them instead;
    `nilemig.nile.define_tenants` gives models the real `tenants` table."""
    node = stmt.node
    if isinstance(node, (ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)):
        return
    if isinstance(node, (ast.CreateSchemaStmt,)) and node.schemaname in nile.BUILTIN_SCHEMAS:
        yield f"schema {node.schemaname!r} is Nile's"
    if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_SCHEMA:
        for obj in node.objects or ():
            if getattr(obj, "sval", None) in nile.BUILTIN_SCHEMAS:
                yield f"schema {obj.sval!r} is Nile's and cannot be dropped"
    for schema, name in _relations(node):
        if schema in nile.BUILTIN_SCHEMAS:
            yield f"{schema}.{name} is in Nile's built-in schema {schema!r}"
        elif schema == "public" and name == "distributed_transactions":
            yield "distributed_transactions is Nile's table"
        elif schema == "public" and name == nile.TENANTS_TABLE:
            yield from _tenants_changes(node)


def _tenants_changes(node: Any) -> Iterator[str]:
    if isinstance(node, ast.CreateStmt) and not node.if_not_exists:
        yield "tenants already exists in every Nile database; do not create it"
    elif isinstance(node, (ast.DropStmt, ast.TruncateStmt)):
        yield "tenants is Nile's table and cannot be dropped or truncated"
    elif isinstance(node, ast.AlterTableStmt):
        for cmd in alter_commands(node, *_TENANTS_COLUMN_CHANGES):
            if cmd.name in nile.TENANTS_NILE_COLUMNS:
                yield f"tenants.{cmd.name} is Nile's column; only columns you added may be changed"
        if alter_commands(node, AT.AT_DropConstraint):
            yield "constraints of tenants are Nile's; do not drop them"
    elif isinstance(node, ast.RenameStmt) and (node.subname in nile.TENANTS_NILE_COLUMNS or
                                                node.renameType == enums.ObjectType.OBJECT_TABLE):
        yield "tenants and its Nile columns cannot be renamed"


# --- Migrations in general -----------------------------------------------------------------------


@statement_rule(
    "MIG003", ERROR, "Table created twice along the chain",
    bad="""
    def upgrade():
        op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
    # --- next migration ---
    def upgrade():
        op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
    """,
    good="""
    def upgrade():
        op.create_table("account", sa.Column("id", sa.Integer, primary_key=True))
    # --- next migration ---
    def upgrade():
        op.add_column("account", sa.Column("email", sa.Text))
    """,
)
def table_created_twice(stmt: Statement) -> Iterator[str]:
    """The walkthrough's "table already exists": a later migration creates a table an earlier
    one already created (and nothing dropped in between), so `up` fails there. Delete or
    rename the second migration, or make it alter the table."""
    table = stmt.created_table()
    if table is None or stmt.node.if_not_exists:
        return
    existing = stmt.schema.tables.get(table.key)
    if existing is not None and existing.created_at is not None:
        first = existing.created_at
        yield f"table {table.display()!r} is already created by {display_path(first.path)}:{first.line}"


@statement_rule(
    "MIG005", WARNING, "Destructive operation",
    bad="""
    def upgrade():
        op.create_table("account", sa.Column("id", sa.Integer, primary_key=True), sa.Column("bio", sa.Text))
        op.drop_column("account", "bio")
    """,
    good="""
    def upgrade():
        op.create_table("account", sa.Column("id", sa.Integer, primary_key=True), sa.Column("bio", sa.Text))
        op.add_column("account", sa.Column("email", sa.Text))
    """,
)
def destructive(stmt: Statement) -> Iterator[str]:
    """Dropping a table or column, changing a column's type, making a column `NOT NULL`, or
    truncating loses data or fails on existing rows, and cannot be undone by a downgrade.
    Make sure it is meant; `# nilemig: ignore[MIG005]` on the line says it is. A type change is
    judged from `existing_type=` when the migration gives it, else from the schema the chain built."""
    node = stmt.node
    if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_TABLE:
        yield f"drops table(s) {', '.join('.'.join(names(o)) for o in node.objects or ())} and their data"
    elif isinstance(node, ast.TruncateStmt):
        yield "TRUNCATE deletes every row"
    elif isinstance(node, ast.AlterTableStmt):
        where = relation_display(node.relation)
        for cmd in alter_commands(node, AT.AT_DropColumn):
            yield f"drops column {where}.{cmd.name} and its data"
        table = stmt.target_table()
        for cmd in alter_commands(node, AT.AT_AlterColumnType):
            old = sql_type_name(stmt.existing_types[cmd.name]) if cmd.name in stmt.existing_types else \
                table.columns.get(cmd.name) if table is not None else None
            new = type_name(cmd.def_.typeName)
            if old is None or not is_widening(old, new):
                yield (f"changes the type of {where}.{cmd.name} ({old or 'unknown'} -> {new}), which can truncate "
                       "data or fail on existing rows")
        for cmd in alter_commands(node, AT.AT_SetNotNull):
            yield f"makes {where}.{cmd.name} NOT NULL, which fails if any row holds NULL"


# --- The chain ---------------------------------------------------------------------------------


@chain_rule(
    "MIG001", ERROR, "Multiple heads",
    bad="""
    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))
    # --- next migration ---
    down_revision = None

    def upgrade():
        op.create_table("b", sa.Column("id", sa.Integer, primary_key=True))
    """,
    good="""
    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))
    # --- next migration ---
    def upgrade():
        op.create_table("b", sa.Column("id", sa.Integer, primary_key=True))
    """,
)
def multiple_heads(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """Two migrations that both follow the same parent (or both start from nothing), usually
    from two branches merged in git. `nilemig up` cannot tell which comes first. Set one's
    `down_revision` to the other, or merge them with `alembic merge heads`."""
    heads = chain.heads()
    if len(heads) > 1:
        for head in heads:
            others = ", ".join(h.revision for h in heads if h is not head)
            yield f"revision {head.revision} is a head, and so is {others}", head.path, 1


@chain_rule(
    "MIG002", ERROR, "down_revision that does not exist",
    bad="""
    down_revision = "does_not_exist"

    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))
    """,
    good="""
    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))
    """,
)
def missing_down_revision(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """A migration names a `down_revision` that no file in `versions/` has (a deleted or
    renamed migration, or a typo). Alembic cannot load the chain at all."""
    known = chain.by_revision()
    for migration in chain.migrations:
        for down in migration.down_revisions:
            if down not in known:
                line = next((n for n, text in enumerate(migration.lines, 1) if "down_revision" in text), 1)
                yield f"down_revision {down!r} is not the revision of any migration file", migration.path, line


@chain_rule(
    "MIG004", WARNING, "Empty downgrade",
    bad="""
    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))

    def downgrade():
        pass
    """,
    good="""
    def upgrade():
        op.create_table("a", sa.Column("id", sa.Integer, primary_key=True))

    def downgrade():
        op.drop_table("a")
    """,
)
def empty_downgrade(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """A `downgrade()` that does nothing makes `nilemig down` report success while leaving what
    `upgrade()` did in place: the schema changed, or the rows it wrote. Undo it, or raise an error
    saying why it cannot be undone. Merge migrations and migrations whose `upgrade()` does nothing
    have nothing to undo and are not reported."""
    for migration in chain.migrations:
        if migration.downgrade_line is None or not migration.downgrade_is_empty or migration.is_merge \
                or migration.upgrade_is_empty or migration.changes == set():
            continue
        left = "the rows upgrade() wrote" if migration.changes == {"data"} else "the schema changed"
        yield f"downgrade() does nothing: `nilemig down` would leave {left}", migration.path, \
            migration.downgrade_line


def _unchecked(failure: RenderFailure) -> str:
    if not failure.checked:
        return "nothing in it was checked"
    rest = f"lines {failure.line}-{failure.unchecked_to}" if failure.unchecked_to and \
        failure.unchecked_to > failure.line else f"line {failure.line} on"
    return (f"the {failure.checked} statement(s) before it were checked, what upgrade() runs from {rest} "
            "was not")


@chain_rule(
    "MIG000", ERROR, "Migration that needs a live database, so part of it was not checked",
    bad="""
    def upgrade():
        rows = op.get_bind().execute(sa.text("SELECT id FROM account")).fetchall()
        for (account_id,) in rows:
            op.execute(sa.text("UPDATE account SET name = upper(name) WHERE id = :id").bindparams(id=account_id))
    """,
    good="""
    def upgrade():
        op.execute("UPDATE account SET name = upper(name)")
    """,
)
def needs_database(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """nilemig checks migrations without a database, by rendering them to SQL with Alembic's
    offline mode. A migration that reads rows (`op.get_bind().execute(...).fetchall()`) or reflects
    tables cannot go on offline: the statements before that line are checked, the rest of its
    `upgrade()` is not, so this is an error rather than a silent pass. Prefer set-based SQL in
    `op.execute`; or review the unchecked lines yourself and say so with
    `# nilemig: ignore[MIG000]` on the line that reads."""
    for failure in chain.render_failures:
        if failure.offline_only:
            yield (f"needs a live database here: {failure.reason}; {_unchecked(failure)}", failure.path,
                   failure.line)


@chain_rule(
    "MIG007", ERROR, "Migration code that fails when it runs",
    bad="""
    def upgrade():
        op.add_column("tenants", sa.Column("plan", sqlmodel.sql.sqltypes.AutoString()))
    """,
    good="""
    def upgrade():
        op.add_column("tenants", sa.Column("plan", sa.String()))
    """,
)
def fails_when_run(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """A migration that raises for a reason no database changes — a missing import (autogenerate
    output using `sqlmodel` or `pgvector` types without importing them), a `NameError`, a syntax
    error, an API SQLAlchemy 2.0 removed (`select([...])`, executing a plain string) — fails on
    Nile just as it fails here, after the migrations before it were applied. What it ran before
    the failing line is still checked."""
    for failure in chain.render_failures:
        if not failure.offline_only:
            yield f"fails when it runs, on Nile too: {failure.reason}; {_unchecked(failure)}", failure.path, \
                failure.line


@chain_rule(
    "MIG006", ERROR, "SQL that does not parse",
    bad="""
    def upgrade():
        op.execute("ALTER TABLE account ADD COLUM email text")
    """,
    good="""
    def upgrade():
        op.execute("ALTER TABLE account ADD COLUMN email text")
    """,
)
def sql_syntax(chain: Chain) -> Iterator[tuple[str, Any, int]]:
    """SQL in `op.execute(...)` that PostgreSQL's own parser rejects fails when the migration
    runs, after the migrations before it were applied. Fix it before it reaches the database."""
    for path, line, why in chain.sql_errors:
        yield f"PostgreSQL cannot parse this SQL: {why}", path, line
