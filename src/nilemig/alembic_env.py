"""The body of every nilemig project's env.py.

Keeping it in the package means a fix here reaches every project already
initialised, and plain `alembic` behaves exactly like `nilemig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nilemig import autogen, nile
from nilemig.config import Database, Project
from nilemig.core import connection_heads, resolve_database
from nilemig.keys import (
    BOOKKEEPING_TABLES,
    CONNECTION_KEY,
    DATABASE_KEY,
    FINAL_HEADS_KEY,
    FROM_CLI_KEY,
    ON_APPLY_KEY,
    SETTINGS_KEY,
)
from nilemig.runsettings import RunSettings


def configure_options(target_metadata: Any) -> dict[str, Any]:
    """Options every nilemig run passes to `context.configure`, online or offline."""
    return {
        "target_metadata": target_metadata,
        # One transaction per migration: a failure rolls back only that migration and
        # leaves alembic_version at the last one that succeeded.
        "transaction_per_migration": True,
        "include_name": _include_name,
        "include_object": nile.include_object,
        "process_revision_directives": autogen.process_revision_directives,
    }


def _include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """Nile's filter, and never nilemig's own bookkeeping tables."""
    return not (type_ == "table" and name in BOOKKEEPING_TABLES) and nile.include_name(name, type_, parent_names)


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
    callbacks = [on_apply] if on_apply is not None else []
    settings = config.attributes.get(SETTINGS_KEY) or RunSettings()
    connection = config.attributes.get(CONNECTION_KEY)
    if connection is not None:
        from sqlalchemy.engine import Engine

        if isinstance(connection, Engine):  # pytest-alembic hands over an engine
            with connection.connect() as live:
                _run_handed_over(context, live, callbacks, settings, options)
        else:
            _run_handed_over(context, connection, callbacks, settings, options)
        return

    from nilemig import ledger, tenants
    from nilemig.database import connect, set_timeouts
    from nilemig.runlock import migration_lock

    database = config.attributes.get(DATABASE_KEY)
    if database is None:
        database = resolve_database(Project(Path(config.config_file_name).resolve().parent))
    with connect(database) as connection:
        set_timeouts(connection, settings.table_lock_timeout_seconds, settings.statement_timeout_seconds)
        # Lock before Alembic reads the current revision: concurrent runners apply each migration once.
        with migration_lock(connection, settings.lock_wait_seconds, settings.on_notice):
            current = connection_heads(connection)
            baselined = ledger.ensure(connection, context.script, current)
            connection.commit()
            if baselined:
                settings.on_notice(
                    f"Recorded {baselined} migration(s) applied before nilemig in {ledger.TABLE}, "
                    "taking their files as they are now as reviewed."
                )
            steps = tenants.prepare(context, database, settings)
            options["on_version_apply"] = [ledger.Recorder(), *callbacks, steps]
            _configure_and_run(context, steps, connection=connection, **options)
            # Where the run left the database, read under the lock, for nilemig to report.
            config.attributes[FINAL_HEADS_KEY] = connection_heads(connection)


def _run_handed_over(context: Any, connection: Any, callbacks: list, settings: RunSettings,
                     options: dict[str, Any]) -> None:
    """Run on a connection the caller made; for_each_tenant steps only when Alembic owns its transactions."""
    steps = None
    if not connection.in_transaction():
        from nilemig import tenants

        steps = tenants.prepare(context, Database(connection.engine.url, "env.py's connection"), settings)
    _configure_and_run(context, steps, connection=connection, on_version_apply=[*callbacks, *filter(None, [steps])],
                       **options)


def _configure_and_run(context: Any, steps: Any = None, **options: Any) -> None:
    context.configure(**options)
    if steps is not None:  # incomplete for_each_tenant steps first, under the run's lock
        steps.resume(context.get_context())
    with context.begin_transaction():
        context.run_migrations()
