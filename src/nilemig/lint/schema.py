"""The schema as the chain builds it, statement by statement, and readers for pglast nodes.

Only what the rules need is tracked: tables, their columns' types, primary keys,
and where each table was created. It starts with Nile's built-in tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pglast import ast, enums

from nilemig import nile

SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})


@dataclass(frozen=True)
class Location:
    path: Any  # str as Alembic names the file while rendering; the migration's Path in rules
    line: int


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    target: ast.RangeVar
    target_columns: tuple[str, ...]


@dataclass
class Table:
    schema: str
    name: str
    columns: dict[str, str] = field(default_factory=dict)  # column -> type name as PostgreSQL spells it
    primary_key: tuple[str, ...] = ()
    created_at: Location | None = None  # None: one of Nile's built-ins
    sequences: dict[str, str] = field(default_factory=dict)  # column -> how it draws on a sequence
    foreign_keys: list[ForeignKey] = field(default_factory=list)  # outgoing
    uniques: dict[str, tuple[str, ...]] = field(default_factory=dict)  # constraint or index name -> columns
    # `to_json()` as of the last change: `apply` is the only code that changes a table, and it calls `changed()`
    _json: list[Any] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return self.schema, self.name

    @property
    def tenant_aware(self) -> bool:
        """Nile's definition: a `tenant_id uuid` column. A tenant_id of another type is an error (NILE002)."""
        return self.columns.get(nile.TENANT_ID) == "uuid"

    @property
    def primary_key_name(self) -> str:
        return f"{self.name}_pkey"

    @property
    def builtin(self) -> bool:
        return self.created_at is None

    def display(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    def changed(self) -> None:
        self._json = None

    def to_json(self) -> list[Any]:
        """Everything the rules can see of the table. A foreign key's target keeps only its schema and name:
        nothing reads the rest of that node."""
        if self._json is None:
            self._json = [self.schema, self.name, list(self.columns.items()), list(self.primary_key),
                          None if self.created_at is None else [str(self.created_at.path), self.created_at.line],
                          list(self.sequences.items()),
                          [[fk.name, list(fk.columns), list(relation_key(fk.target)), list(fk.target_columns)]
                           for fk in self.foreign_keys],
                          [[name, list(columns)] for name, columns in self.uniques.items()]]
        return self._json


def _builtin_tables() -> list[Table]:
    tenants = Table("public", nile.TENANTS_TABLE, {c: "uuid" if c in ("id", "compute_id") else "text"
                                                   for c in nile.TENANTS_NILE_COLUMNS}, ("id",))
    return [
        tenants,
        Table("public", "distributed_transactions", {"id": "uuid", "state": "text"}, ("id",)),
        Table("users", "users", {"id": "uuid", "email": "text"}, ("id",)),
        Table("users", "tenant_users", {nile.TENANT_ID: "uuid", "user_id": "uuid"}, (nile.TENANT_ID, "user_id")),
    ]


@dataclass(frozen=True)
class BecameTenantAware:
    """Not SQL: handed to the statement rules at the end of a migration in which an existing table got a
    `tenant_id uuid`. Holds what the table had before that, and still has: the rules judge it as tenant-aware."""

    table: Table
    primary_key: tuple[str, ...] | None  # None when the migration set a new one (judged where it was set)
    sequences: dict[str, str]
    foreign_keys: list[ForeignKey]
    incoming: list[tuple[Table, ForeignKey]]  # foreign keys of other tables that point at it
    uniques: list[tuple[str, ...]]


@dataclass
class Schema:
    tables: dict[tuple[str, str], Table] = field(default_factory=dict)
    indexes: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # unique index -> table key

    def referencing(self, table: Table) -> list[tuple[Table, ForeignKey]]:
        return [(source, fk) for source in self.tables.values() for fk in source.foreign_keys
                if source is not table and self.get(fk.target) is table]

    @classmethod
    def with_nile_builtins(cls) -> Schema:
        return cls({t.key: t for t in _builtin_tables()})

    def get(self, relation: ast.RangeVar | None) -> Table | None:
        return self.tables.get(relation_key(relation)) if relation is not None else None

    def to_json(self) -> dict[str, Any]:
        """Everything the rules can see, in order (the order of `tables` decides the order of some messages)."""
        return {"tables": [t.to_json() for t in self.tables.values()],
                "indexes": [[list(index), list(table)] for index, table in self.indexes.items()]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schema:
        """The schema `to_json` described; raises KeyError, TypeError or ValueError on anything else."""
        def pairs(items: Any) -> tuple[str, str]:
            first, second = items
            return str(first), str(second)

        def strings(items: Any) -> tuple[str, ...]:
            return tuple(str(item) for item in items)

        schema = cls()
        for schema_name, name, columns, primary_key, created_at, sequences, fks, uniques in data["tables"]:
            table = Table(str(schema_name), str(name), dict(pairs(c) for c in columns), strings(primary_key),
                          None if created_at is None else Location(Path(created_at[0]), int(created_at[1])),
                          dict(pairs(s) for s in sequences))
            for fk_name, fk_columns, (target_schema, target_name), target_columns in fks:
                target = ast.RangeVar(schemaname=str(target_schema), relname=str(target_name), inh=True,
                                      relpersistence="p")
                table.foreign_keys.append(ForeignKey(str(fk_name), strings(fk_columns), target,
                                                     strings(target_columns)))
            table.uniques = {str(unique): strings(unique_columns) for unique, unique_columns in uniques}
            schema.tables[table.key] = table
        schema.indexes = {pairs(index): pairs(table) for index, table in data["indexes"]}
        return schema


def state_text(state: dict[str, Any]) -> str:
    """`Schema.to_json()` as the text its digest is taken of."""
    return json.dumps(state, separators=(",", ":"))


def state_digest(text: str) -> str:
    """A digest of `state_text`: equal digests, equal schemas as far as any rule can tell."""
    return hashlib.sha256(text.encode()).hexdigest()


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
            _add_column(table, element)
            if column_constraints(element, enums.ConstrType.CONSTR_PRIMARY):
                table.primary_key = (element.colname,)
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_PRIMARY:
            table.primary_key = names(element.keys)
    table.foreign_keys = foreign_keys(name, stmt.tableElts)
    table.uniques = dict(unique_keys(name, stmt.tableElts))
    return table


def _add_column(table: Table, column: ast.ColumnDef) -> None:
    table.columns[column.colname] = type_name(column.typeName)
    if how := uses_sequence(column):
        table.sequences[column.colname] = how


def _default_name(table: str, columns: tuple[str, ...], suffix: str) -> str:
    """The name PostgreSQL gives an unnamed constraint (before truncation to 63 characters)."""
    return "_".join((table, *columns, suffix))


def foreign_keys(table: str, elements: Any) -> list[ForeignKey]:
    """Foreign keys in CREATE TABLE elements (or ALTER TABLE additions), column-level and table-level."""
    found = []
    for element in elements or ():
        if isinstance(element, ast.ColumnDef):
            for c in column_constraints(element, enums.ConstrType.CONSTR_FOREIGN):
                columns = (element.colname,)
                found.append(ForeignKey(c.conname or _default_name(table, columns, "fkey"), columns, c.pktable,
                                        names(c.pk_attrs)))
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_FOREIGN:
            columns = names(element.fk_attrs)
            found.append(ForeignKey(element.conname or _default_name(table, columns, "fkey"), columns,
                                    element.pktable, names(element.pk_attrs)))
    return found


def unique_keys(table: str, elements: Any) -> list[tuple[str, tuple[str, ...]]]:
    """(name, columns) of UNIQUE constraints in CREATE TABLE elements (or ALTER TABLE additions)."""
    found = []
    for element in elements or ():
        if isinstance(element, ast.ColumnDef):
            for c in column_constraints(element, enums.ConstrType.CONSTR_UNIQUE):
                found.append((c.conname or _default_name(table, (element.colname,), "key"), (element.colname,)))
        elif isinstance(element, ast.Constraint) and element.contype == enums.ConstrType.CONSTR_UNIQUE:
            columns = names(element.keys)
            found.append((element.conname or _default_name(table, columns, "key"), columns))
    return found


def sql_type_name(sql_type: str) -> str:
    """'INTEGER' -> 'int4': a type as SQLAlchemy renders it, named as the schema tracks it."""
    import pglast

    try:
        target = pglast.parse_sql(f"SELECT NULL::{sql_type}")[0].stmt.targetList[0].val
    except pglast.parser.ParseError:
        return sql_type.lower()
    return type_name(target.typeName)


def alter_commands(stmt: ast.AlterTableStmt, *subtypes: enums.AlterTableType) -> list[ast.AlterTableCmd]:
    return [c for c in stmt.cmds or () if c.subtype in subtypes]


def _object_keys(stmt: ast.DropStmt) -> list[tuple[str, str]]:
    keys = []
    for obj in stmt.objects or ():
        parts = names(obj)
        keys.append((parts[0], parts[1]) if len(parts) > 1 else ("public", parts[0]))
    return keys


def apply(schema: Schema, stmt: Any, location: Location) -> None:
    """Update the schema with what a statement does."""
    if isinstance(stmt, ast.CreateStmt):
        key = relation_key(stmt.relation)
        if not (stmt.if_not_exists and key in schema.tables):
            schema.tables[key] = table_from_create(stmt, location)
    elif isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_TABLE:
        for key in _object_keys(stmt):
            schema.tables.pop(key, None)
    elif isinstance(stmt, ast.DropStmt) and stmt.removeType == enums.ObjectType.OBJECT_INDEX:
        for schema_name, index in _object_keys(stmt):
            table = schema.tables.get(schema.indexes.pop((schema_name, index), ("", "")))
            if table is not None:
                table.changed()
                table.uniques.pop(index, None)
    elif isinstance(stmt, ast.IndexStmt) and stmt.unique and (table := schema.get(stmt.relation)) is not None:
        table.changed()
        columns = names(stmt.indexParams)
        index = stmt.idxname or _default_name(table.name, columns, "idx")
        table.uniques[index] = columns
        schema.indexes[(table.schema, index)] = table.key
    elif isinstance(stmt, ast.AlterTableStmt):
        table = schema.get(stmt.relation)
        if table is not None:
            table.changed()
            _apply_alter(table, stmt)
    elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_TABLE:
        table = schema.tables.pop(relation_key(stmt.relation), None)
        if table is not None:
            table.changed()
            table.name = stmt.newname
            schema.tables[table.key] = table
    elif isinstance(stmt, ast.RenameStmt) and stmt.renameType == enums.ObjectType.OBJECT_COLUMN:
        table = schema.get(stmt.relation)
        if table is not None and stmt.subname in table.columns:
            table.changed()
            table.columns[stmt.newname] = table.columns.pop(stmt.subname)
            if stmt.subname in table.sequences:
                table.sequences[stmt.newname] = table.sequences.pop(stmt.subname)
            table.primary_key = tuple(stmt.newname if c == stmt.subname else c for c in table.primary_key)


def _apply_alter(table: Table, stmt: ast.AlterTableStmt) -> None:
    T = enums.AlterTableType
    C = enums.ConstrType
    for cmd in stmt.cmds or ():
        if cmd.subtype == T.AT_AddColumn:
            _add_column(table, cmd.def_)
            table.foreign_keys += foreign_keys(table.name, [cmd.def_])
            table.uniques.update(unique_keys(table.name, [cmd.def_]))
        elif cmd.subtype == T.AT_DropColumn:
            table.columns.pop(cmd.name, None)
            table.sequences.pop(cmd.name, None)
            table.foreign_keys = [fk for fk in table.foreign_keys if cmd.name not in fk.columns]
            table.uniques = {n: cols for n, cols in table.uniques.items() if cmd.name not in cols}
        elif cmd.subtype == T.AT_AlterColumnType:
            table.columns[cmd.name] = type_name(cmd.def_.typeName)
        elif cmd.subtype == T.AT_ColumnDefault:
            if cmd.def_ is None and table.sequences.get(cmd.name) != "identity column":
                table.sequences.pop(cmd.name, None)
            elif isinstance(cmd.def_, ast.FuncCall) and names(cmd.def_.funcname)[-1:] == ("nextval",):
                table.sequences[cmd.name] = "DEFAULT nextval(...)"
        elif cmd.subtype == T.AT_AddIdentity:
            table.sequences[cmd.name] = "identity column"
        elif cmd.subtype == T.AT_DropIdentity:
            table.sequences.pop(cmd.name, None)
        elif cmd.subtype == T.AT_AddConstraint and cmd.def_.contype == C.CONSTR_PRIMARY:
            table.primary_key = names(cmd.def_.keys)
        elif cmd.subtype == T.AT_AddConstraint and cmd.def_.contype == C.CONSTR_FOREIGN:
            table.foreign_keys += foreign_keys(table.name, [cmd.def_])
        elif cmd.subtype == T.AT_AddConstraint and cmd.def_.contype == C.CONSTR_UNIQUE:
            table.uniques.update(unique_keys(table.name, [cmd.def_]))
        elif cmd.subtype == T.AT_DropConstraint:
            if cmd.name == table.primary_key_name:
                table.primary_key = ()
            table.foreign_keys = [fk for fk in table.foreign_keys if fk.name != cmd.name]
            table.uniques.pop(cmd.name, None)
