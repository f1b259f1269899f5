"""A comparable description of a database's own schema, read from the catalogs.

Used by `nilemig verify` to check that a downgrade followed by an upgrade leaves the
schema exactly as it was. Nile's built-in schemas and nilemig's bookkeeping tables are
left out: migrations do not own them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nilemig import nile
from nilemig.keys import BOOKKEEPING_TABLES, VERSION_TABLE

if TYPE_CHECKING:
    import psycopg

_SKIPPED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", *sorted(nile.BUILTIN_SCHEMAS))
_SKIPPED_TABLES = (VERSION_TABLE, *sorted(BOOKKEEPING_TABLES))

# Concatenation rather than format(): these strings go through psycopg, for which % is a placeholder.
_QUERIES = {
    "column": """
        SELECT c.table_schema || '.' || c.table_name || '.' || c.column_name || ' '
               || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN c.is_nullable = 'NO' THEN ' NOT NULL' ELSE '' END
               || COALESCE(' DEFAULT ' || c.column_default, '')
        FROM information_schema.columns c
        JOIN pg_attribute a ON a.attrelid = (quote_ident(c.table_schema) || '.' || quote_ident(c.table_name))::regclass
                            AND a.attname = c.column_name
        WHERE c.table_schema <> ALL (%(schemas)s) AND c.table_name <> ALL (%(tables)s)""",
    "constraint": """
        SELECT con.conrelid::regclass::text || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
        WHERE n.nspname <> ALL (%(schemas)s) AND con.conrelid <> 0
          AND con.conrelid::regclass::text <> ALL (%(tables)s)""",
    "index": """
        SELECT indexdef FROM pg_indexes
        WHERE schemaname <> ALL (%(schemas)s) AND tablename <> ALL (%(tables)s)""",
    "view": """
        SELECT table_schema || '.' || table_name || ' ' || view_definition FROM information_schema.views
        WHERE table_schema <> ALL (%(schemas)s)""",
    "type": """
        SELECT n.nspname || '.' || t.typname || ' ' || COALESCE(
                   (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
                    WHERE e.enumtypid = t.oid), t.typtype::text)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typtype IN ('e', 'd', 'c') AND n.nspname <> ALL (%(schemas)s)
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)""",
    "sequence": """
        SELECT schemaname || '.' || sequencename FROM pg_sequences
        WHERE schemaname <> ALL (%(schemas)s)""",
    "schema": """
        SELECT nspname::text FROM pg_namespace
        WHERE nspname <> ALL (%(schemas)s) AND nspname NOT LIKE 'pg\\_%%' AND nspname <> 'public'""",
}


def snapshot(connection: psycopg.Connection) -> frozenset[str]:
    """Every table column, constraint, index, view, type, sequence and schema the migrations made."""
    params = {"schemas": list(_SKIPPED_SCHEMAS), "tables": list(_SKIPPED_TABLES)}
    found = set()
    for kind, query in _QUERIES.items():
        for (line,) in connection.execute(query, params):
            found.add(f"{kind} {line}")
    return frozenset(found)


def differences(before: frozenset[str], after: frozenset[str]) -> list[str]:
    """Human-readable lines: what disappeared (-) and what appeared (+)."""
    return [f"- {line}" for line in sorted(before - after)] + [f"+ {line}" for line in sorted(after - before)]
