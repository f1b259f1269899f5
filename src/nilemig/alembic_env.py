"""The body of every nilemig project's env.py.

Keeping it in the package means a fix here reaches every project already
initialised, and plain `alembic` behaves exactly like `nilemig`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nilemig import autogen, nile
from nilemig.config import Database, Project
from nilemig.core import resolve_database, retry_transient_failures
from nilemig.keys import (
    CONNECTION_KEY,
    DATABASE_KEY,
    FINAL_HEADS_KEY,
    FROM_CLI_KEY,
    ON_APPLY_KEY,
    PREFLIGHT_KEY,
    SETTINGS_KEY,
    VERSION_TABLE,
)
from nilemig.runsettings import RunSettings


def configure_options(target_metadata: Any, **project_options: Any) -> dict[str, Any]:
    """Options every nilemig run passes to `context.configure`, online or offline.

    `project_options` are the project's own `context.configure` options (`init --adopt`
    carries them over): nilemig's filters and revision hook are combined with the project's
    (an object is compared only when both include it), and its other options win.
    """
    own = {
        "target_metadata": target_metadata,
        # One transaction per migration: a failure rolls back only that migration and
        # leaves alembic_version at the last one that succeeded.
        "transaction_per_migration": True,
        "include_name": nile.include_name,
        "include_object": nile.include_object,
        "process_revision_directives": autogen.process_revision_directives,
    }
    options = {**project_options, **own}
    for name in ("include_name", "include_object"):
        if project_options.get(name) is not None:
            options[name] = _both(own[name], project_options[name])
    if project_options.get("process_revision_directives") is not None:
        options["process_revision_directives"] = _in_turn(project_options["process_revision_directives"],
                                                          own["process_revision_directives"])
    return options


def _both(first: Any, second: Any) -> Any:
    return lambda *args: first(*args) and second(*args)


def _in_turn(first: Any, second: Any) -> Any:
    def hook(*args: Any) -> None:
        first(*args)
        second(*args)

    return hook


def run_migrations(context: Any, target_metadata: Any, **project_options: Any) -> None:
    config = context.config
    if config.config_file_name and not config.attributes.get(FROM_CLI_KEY):
        from logging.config import fileConfig

        fileConfig(config.config_file_name, disable_existing_loggers=False)

    options = configure_options(target_metadata, **project_options)
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

    from nilemig import ledger, runlock, tenants
    from nilemig.database import autocommit, connect, timeout_columns

    database = config.attributes.get(DATABASE_KEY)
    if database is None:
        database = resolve_database(Project(Path(config.config_file_name).resolve().parent))
    version_table = {k: v for k, v in options.items() if k in ("version_table", "version_table_schema")}
    table_names = {"version_table": version_table.get("version_table", VERSION_TABLE),
                   "schema": version_table.get("version_table_schema")}
    recorder = ledger.Recorder()
    steps = tenants.prepare(context, database, settings)
    # The step runner goes last: it commits its migration, then runs the migration's steps.
    options["on_version_apply"] = [recorder, *callbacks, steps]
    with connect(database) as connection:
        with autocommit(connection):
            # Lock before reading the current revision: concurrent runners apply each migration once. The
            # session timeouts and which tables exist ride on the lock's own statement. The lock is not
            # released by hand: closing the connection (below) releases it, one round trip fewer.
            took = runlock.acquire(connection, settings.lock_wait_seconds, settings.on_notice, also=", ".join((
                timeout_columns(settings.table_lock_timeout_seconds, settings.statement_timeout_seconds),
                ledger.presence_columns(**table_names))))
            state = ledger.read_state(connection, took[3:], **table_names)
        preflight = config.attributes.get(PREFLIGHT_KEY)
        anything_to_run = _keeping_environment(context, preflight, state) if preflight is not None else True
        context.configure(connection=connection, **options)
        migration_context = context.get_context()
        baselined = ledger.ensure(connection, context.script, state,
                                  # Made here, not in the first migration's transaction as Alembic would:
                                  # a retry rolls that transaction back whole (core.retry_transient_failures).
                                  lambda: migration_context._version.create(connection))
        connection.commit()
        if baselined:
            settings.on_notice(
                f"Recorded {baselined} migration(s) applied before nilemig in {ledger.TABLE}, "
                "taking their files as they are now as reviewed."
            )
        if state.has_steps:
            # Incomplete for_each_tenant steps first, under the run's lock, before anything new is applied.
            steps.resume(migration_context)
        if anything_to_run:
            recorder.watch(migration_context)
            retry_transient_failures(migration_context, settings)
            with context.begin_transaction():
                context.run_migrations()
        # Where the run left the database, known under the lock, for nilemig to report.
        config.attributes[FINAL_HEADS_KEY] = state.current if recorder.heads is None else recorder.heads


def _keeping_environment(context: Any, preflight: Callable[[Any], bool], state: Any) -> bool:
    """Call nilemig's pre-flight, which may run an Alembic command of its own (nilemig check renders the
    migrations offline); such a command leaves `alembic.context` without the environment env.py runs in,
    so it is put back."""
    environment = getattr(context, "_proxy", None)
    try:
        return preflight(state)
    finally:
        if environment is not None:
            environment._install_proxy()


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
    if steps is not None:  # incomplete for_each_tenant steps first
        steps.resume(context.get_context())
    with context.begin_transaction():
        context.run_migrations()
