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

from nilemig.keys import BOOKKEEPING_TABLES

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
# The extensions Nile's docs list as available from the start (no CREATE EXTENSION needed) that a plain
# PostgreSQL can provide; local and scratch databases create the ones their server has at set-up.
NILE_EXTENSIONS = ("uuid-ossp", "pgcrypto", "vector", "pg_trgm", "hstore", "citext", "btree_gist", "btree_gin",
                   "fuzzystrmatch", "unaccent", "cube", "intarray", "tablefunc", "bloom", "intagg")
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
    """Make a plain PostgreSQL database reject the DDL Nile rejects, and scope tenant-aware tables to
    `nile.tenant_id` as Nile does (an event trigger and row-level security; needs a superuser).

    For local and scratch databases, so that a migration fails there as it would on Nile.
    """
    connection.execute(_data("nile_strict.sql"))


def install_extensions(connection: psycopg.Connection, owner: str) -> list[str]:
    """Create the Nile extensions this server has (superuser connection); return those it lacks.

    Trusted extensions are created as `owner`, who then owns them (a migration may drop and
    create them again, as the developer may on Nile); the others stay the superuser's.
    """
    from psycopg import sql

    available = dict(connection.execute(
        "SELECT name, bool_or(trusted) FROM pg_available_extension_versions WHERE name = ANY(%s) GROUP BY name",
        (list(NILE_EXTENSIONS),)).fetchall())
    for name in NILE_EXTENSIONS:
        if name not in available:
            continue
        if available[name]:
            connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
        connection.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} SCHEMA public").format(sql.Identifier(name)))
        connection.execute("RESET ROLE")
    return [name for name in NILE_EXTENSIONS if name not in available]


def hand_over_builtins(connection: psycopg.Connection, owner: str) -> None:
    """Let the database's non-superuser owner use Nile's built-in tables as a Nile developer does
    (read and write them, reference them, add columns to `tenants`): `owner` owns them."""
    from psycopg import sql

    schemas = sorted(BUILTIN_SCHEMAS)
    connection.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
        sql.SQL(", ").join(map(sql.Identifier, schemas)), sql.Identifier(owner)))
    builtin_tables = connection.execute(
        "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND (n.nspname = ANY(%s) OR (n.nspname = 'public' AND c.relname = ANY(%s)))",
        (schemas, sorted(BUILTIN_PUBLIC_TABLES))).fetchall()
    for (table,) in builtin_tables:
        connection.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(table), sql.Identifier(owner)))


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
    """Alembic autogenerate hook: skip Nile's built-in schemas and tables, and nilemig's bookkeeping tables."""
    if type_ == "schema":
        return name not in BUILTIN_SCHEMAS
    if type_ == "table":
        schema = parent_names.get("schema_name")
        if name in BOOKKEEPING_TABLES:
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
