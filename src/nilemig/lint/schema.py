"""The schema as the chain builds it, statement by statement, and readers for pglast nodes.

Only what the rules need is tracked: tables, their columns' types, primary keys,
and where each table was created. It starts with Nile's built-in tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums

from nilemig import nile

SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


@dataclass(frozen=True)
class Location:
    path: Any  # str as Alembic names the file while rendering; the migration's Path in rules
    line: int


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # column -> type name as PostgreSQL spells it
    primary_key: tuple[str, ...] = ()
    created_at: Location | None = None  # None: one of Nile's built-ins

    @property
    def key(self) -> tuple[str, str]:
        return self.schema, self.name

    @property
    def tenant_aware(self) -> bool:
        return nile.TENANT_ID in self.columns

    @property
    def builtin(self) -> bool:
        return self.created_at is None

    def display(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


def _builtin_tables() -> list[Table]:
    tenants = Table("public", nile.TENANTS_TABLE, {c: "uuid" if c in ("id", "compute_id") else "text"
                                                   for c in nile.TENANTS_NILE_COLUMNS}, ("id",))
    return [
        tenants,
        Table("public", "distributed_transactions", {"id": "uuid", "state": "text"}, ("id",)),
        Table("users", "users", {"id": "uuid", "email": "text"}, ("id",)),
        Table("users", "tenant_users", {nile.TENANT_ID: "uuid", "user_id": "uuid"}, (nile.TENANT_ID, "user_id")),
    ]


@dataclass
class Schema:
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)

    @classmethod
    def with_nile_builtins(cls) -> Schema:
        return cls({t.key: t for t in _builtin_tables()})

    def get(self, relation: ast.RangeVar | None) -> Table | None:
        return self.tables.get(relation_key(relation)) if relation is not None else None


def relation_key(relation: ast.RangeVar) -> tuple[str, str]:
    return relation.schemaname or "public", relation.relname


def relation_display(relation: ast.RangeVar) -> str:
    schema, name = relation_key(relation)
    return name if schema == "public" else f"{schema}.{name}"


def names(nodes: Any) -> tuple[str, ...]:
    """('a', 'b') from a tuple of pglast String nodes (or IndexElems)."""
    found = []
    for node in nodes or ():
        value = getattr(node, "sval", None) or getattr(node, "name", None)
        if value:
            found.append(value)
    return tuple(found)


def type_name(type_node: ast.TypeName | None) -> str:
    """The type as PostgreSQL names it, with its modifiers: 'uuid', 'int4', 'varchar(50)'."""
    if type_node is None or not type_node.names:
        return ""
    base = names(type_node.names)[-1]
    mods = [str(m.val.ival) for m in type_node.typmods or () if isinstance(getattr(m, "val", None), ast.Integer)]
    return f"{base}({','.join(mods)})" if mods else base


_WIDER = {"int2": 1, "int4": 2, "int8": 3, "float4": 1, "float8": 2}


def is_widening(old: str, new: str) -> bool:
    """True when every value of type `old` fits `new` unchanged (varchar(50) -> varchar(120), int4 -> int8)."""
    old_base, _, old_mods = old.partition("(")
    new_base, _, new_mods = new.partition("(")
    if old_base in ("varchar", "bpchar") and new_base in ("varchar", "text"):
        if new_base == "text" or not new_mods:
            return True
        return bool(old_mods) and int(new_mods.rstrip(")")) >= int(old_mods.rstrip(")"))
    if old_base in _WIDER and new_base in _WIDER and old_base[:3] == new_base[:3]:
        return _WIDER[new_base] >= _WIDER[old_base]
    return old == new


def column_constraints(column: ast.ColumnDef, contype: enums.ConstrType) -> list[ast.Constraint]:
    return [c for c in column.constraints or () if c.contype == contype]


def uses_sequence(column: ast.ColumnDef) -> str | None:
    """How a column definition draws on a sequence, or None."""
    if type_name(column.typeName) in SERIAL_TYPES:
        return f"{type_name(column.typeName).upper()} type"
    if column_constraints(column, enums.ConstrType.CONSTR_IDENTITY) or column.identity not in ("", "\x00", None):
        return "identity column"
    for default in column_constraints(column, enums.ConstrType.CONSTR_DEFAULT):
        func = default.raw_expr
        if isinstance(func, ast.FuncCall) and names(func.funcname)[-1:] == ("nextval",):
            return "DEFAULT nextval(...)"
    return None


def table_from_create(stmt: ast.CreateStmt, location: Location) -> Table:
    schema, name = relation_key(stmt.relation)
    table = Table(schema, name, created_at=location)
    for element in stmt.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            table.columns[element.colname] = type_name(element.typeName)
            if column_constraints(element, enums.ConstrType.CONSTR_PRIMARY):
                table.primary_key = (element.colname,)
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_PRIMARY:
            table.primary_key = names(element.keys)
    return table


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    target: ast.RangeVar
    target_columns: tuple[str, ...]


def foreign_keys(elements: Any) -> list[ForeignKey]:
    """Foreign keys in CREATE TABLE elements, column-level and table-level."""
    found = []
    for element in elements or ():
        if isinstance(element, ast.ColumnDef):
            for c in column_constraints(element, enums.ConstrType.CONSTR_FOREIGN):
                found.append(ForeignKey((element.colname,), c.pktable, names(c.pk_attrs)))
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_FOREIGN:
            found.append(ForeignKey(names(element.fk_attrs), element.pktable, names(element.pk_attrs)))
    return found


def unique_keys(elements: Any) -> list[tuple[str, ...]]:
    """Column sets of UNIQUE constraints in CREATE TABLE elements."""
    found = []
    for element in elements or ():
        if isinstance(element, ast.ColumnDef) and column_constraints(element, enums.ConstrType.CONSTR_UNIQUE):
            found.append((element.colname,))
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_UNIQUE:
            found.append(names(element.keys))
    return found


def alter_commands(stmt: ast.AlterTableStmt, *subtypes: enums.AlterTableType) -> list[ast.AlterTableCmd]:
    return [c for c in stmt.cmds or () if c.subtype in subtypes]


def apply(schema: Schema, stmt: Any, location: Location) -> None:
    """Update the schema with what a statement does."""
    if isinstance(stmt, ast.CreateStmt):
        key = relation_key(stmt.relation)
        if not (stmt.if_not_exists and key in schema.tables):
            schema.tables[key] = table_from_create(stmt, location)
    elif isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_TABLE:
        for obj in stmt.objects or ():
            parts = names(obj)
            schema.tables.pop((parts[0], parts[1]) if len(parts) > 1 else ("public", parts[0]), None)
    elif isinstance(stmt, ast.AlterTableStmt):
        table = schema.get(stmt.relation)
        if table is None:
            return
        T = enums.AlterTableType
        for cmd in stmt.cmds or ():
            if cmd.subtype == T.AT_AddColumn:
                table.columns[cmd.def_.colname] = type_name(cmd.def_.typeName)
            elif cmd.subtype == T.AT_DropColumn:
                table.columns.pop(cmd.name, None)
            elif cmd.subtype == T.AT_AlterColumnType:
                table.columns[cmd.name] = type_name(cmd.def_.typeName)
            elif cmd.subtype == T.AT_AddConstraint and cmd.def_.contype == enums.ConstrType.CONSTR_PRIMARY:
                table.primary_key = names(cmd.def_.keys)
    elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_TABLE:
        table = schema.tables.pop(relation_key(stmt.relation), None)
        if table is not None:
            table.name = stmt.newname
            schema.tables[table.key] = table
    elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_COLUMN:
        table = schema.get(stmt.relation)
        if table is not None and stmt.subname in table.columns:
            table.columns[stmt.newname] = table.columns.pop(stmt.subname)
            table.primary_key = tuple(stmt.newname if c == stmt.subname else c for c in table.primary_key)
