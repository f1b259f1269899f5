"""The body of every nilemig project's env.py.

Keeping it in the package means a fix here reaches every project already
initialised, and plain `alembic` behaves exactly like `nilemig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nilemig import autogen, nile
from nilemig.config import Project, resolve_database

# Keys nilemig puts in alembic's Config.attributes for env.py to pick up.
DATABASE_KEY = "nilemig_database"
ON_APPLY_KEY = "nilemig_on_version_apply"
FROM_CLI_KEY = "nilemig_cli"
# pytest-alembic and Alembic's cookbook hand a live connection over under this key.
CONNECTION_KEY = "connection"


def configure_options(target_metadata: Any) -> dict[str, Any]:
    """Options every nilemig run passes to `context.configure`, online or offline."""
    return {
        "target_metadata": target_metadata,
        # One transaction per migration: a failure rolls back only that migration and
        # leaves alembic_version at the last one that succeeded.
        "transaction_per_migration": True,
        "include_name": nile.include_name,
        "include_object": nile.include_object,
        "process_revision_directives": autogen.process_revision_directives,
    }


def run_migrations(context: Any, target_metadata: Any) -> None:
    config = context.config
    if config.config_file_name and not config.attributes.get(FROM_CLI_KEY):
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)

    options = configure_options(target_metadata)
    if context.is_offline_mode():
        # Rendering SQL needs the dialect only, never a server.
        _configure_and_run(context, dialect_name="postgresql", literal_binds=True, **options)
        return

    on_apply = config.attributes.get(ON_APPLY_KEY)
    if on_apply is not None:
        options["on_version_apply"] = on_apply
    connection = config.attributes.get(CONNECTION_KEY)
    if connection is not None:
        _configure_and_run(context, connection=connection, **options)
        return

    from nilemig.database import connect

    database = config.attributes.get(DATABASE_KEY)
    if database is None:
        database = resolve_database(Project(Path(config.config_file_name).resolve().parent))
    with connect(database) as connection:
        _configure_and_run(context, connection=connection, **options)


def _configure_and_run(context: Any, **options: Any) -> None:
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()
