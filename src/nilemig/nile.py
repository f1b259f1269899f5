"""What nilemig knows about Nile: its built-in objects and its tenant-aware tables.

This is the one list of Nile's built-ins in the package; autogenerate's filters,
the lint rules and the local database all read it from here.
"""

from __future__ import annotations

import uuid
from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, ForeignKey, MetaData, Table, Text, Uuid, text
from sqlalchemy.dialects.postgresql import TIMESTAMP
from sqlalchemy.orm import Mapped, mapped_column

from nilemig.keys import LEDGER_TABLE

if TYPE_CHECKING:
    import psycopg

# Schemas that belong to Nile entirely: never create, alter or drop anything in them.
BUILTIN_SCHEMAS = frozenset({"users", "auth", "nile_ddl"})
# Nile's tables in the public schema.
TENANTS_TABLE = "tenants"
BUILTIN_PUBLIC_TABLES = frozenset({TENANTS_TABLE, "distributed_transactions"})
# Nile's own columns of `tenants`; users may add columns of their own (ALTER TABLE tenants ADD COLUMN).
TENANTS_NILE_COLUMNS = frozenset({"id", "name", "created", "updated", "deleted", "compute_id"})
TENANT_ID = "tenant_id"
# Nile's functions in the public schema (tenants.id's default).
BUILTIN_FUNCTIONS = frozenset({"uuid_generate_v7"})


def is_builtin_table(name: str, schema: str | None = None) -> bool:
    if schema in BUILTIN_SCHEMAS:
        return True
    return schema in (None, "public") and name in BUILTIN_PUBLIC_TABLES


def _data(name: str) -> str:
    return resources.files("nilemig").joinpath("data", name).read_text(encoding="utf-8")


def install_builtins(connection: psycopg.Connection) -> None:
    """Create Nile's built-in objects in a plain PostgreSQL database (idempotent)."""
    connection.execute(_data("nile_builtins.sql"))


def install_strictness(connection: psycopg.Connection) -> None:
    """Make a plain PostgreSQL database reject the DDL Nile rejects (an event trigger; needs a superuser).

    For local and scratch databases, so that a migration fails there as it would on Nile.
    """
    connection.execute(_data("nile_strict.sql"))


def define_tenants(metadata: MetaData, *extra_columns: Column) -> Table:
    """Nile's built-in `tenants` table, as Nile defines it, in your models' metadata.

    Reference it (foreign keys, relationships, queries) instead of mirroring it by
    hand; nilemig's autogenerate never emits operations on Nile's own columns.
    Columns of your own go in `extra_columns` and are migrated as usual
    (Nile allows `ALTER TABLE tenants ADD COLUMN`).
    """
    return Table(
        TENANTS_TABLE,
        metadata,
        Column("id", Uuid, primary_key=True, server_default=text("public.uuid_generate_v7()")),
        Column("name", Text),
        Column("created", TIMESTAMP(precision=6), nullable=False, server_default=text("LOCALTIMESTAMP")),
        Column("updated", TIMESTAMP(precision=6), nullable=False, server_default=text("LOCALTIMESTAMP")),
        Column("deleted", TIMESTAMP(precision=6)),
        Column("compute_id", Uuid),
        *extra_columns,
    )


class TenantAware:
    """Declarative mixin for a tenant-aware table: `tenant_id` uuid, references
    `tenants.id`, and is part of the primary key, as Nile requires."""

    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey(f"{TENANTS_TABLE}.id"), primary_key=True)


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Alembic autogenerate hook: skip Nile's built-in schemas and tables, and nilemig's ledger."""
    if type_ == "schema":
        return name not in BUILTIN_SCHEMAS
    if type_ == "table":
        schema = parent_names.get("schema_name")
        if name == LEDGER_TABLE:
            return False
        return not (schema in BUILTIN_SCHEMAS or (name == "distributed_transactions" and schema in (None, "public")))
    return True


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic autogenerate hook: never create, drop or alter Nile's own objects.

    `tenants` is compared only when both the models and the database have it, and
    then only for the columns (and indexes on them) the user added.
    """
    if type_ == "table":
        if not is_builtin_table(name or "", obj.schema):
            return True
        return name == TENANTS_TABLE and compare_to is not None
    table = getattr(obj, "table", None)
    if table is None or not is_builtin_table(table.name, table.schema):
        return True
    if table.name != TENANTS_TABLE:
        return False
    if type_ == "column":
        return name not in TENANTS_NILE_COLUMNS
    columns = {c.name for c in getattr(obj, "columns", ())}
    return bool(columns) and not columns & TENANTS_NILE_COLUMNS
