"""Names several layers share, kept apart so that none of them has to import another for a string.

`config.attributes` keys are how nilemig's commands (core, commands/) talk to the
`env.py` body (alembic_env) through Alembic's Config; the table names are nilemig's
own bookkeeping, which autogenerate, verify and the ledger all have to recognise.
"""

# Keys nilemig puts in Alembic's Config.attributes for env.py to pick up.
DATABASE_KEY = "nilemig_database"
ON_APPLY_KEY = "nilemig_on_version_apply"
FROM_CLI_KEY = "nilemig_cli"
SETTINGS_KEY = "nilemig_run_settings"
FINAL_HEADS_KEY = "nilemig_final_heads"
# A callable nilemig's up/down hand to env.py: given the ledger.State read under the migration lock, on the
# connection that migrates, it refuses (raises) or says whether Alembic has anything to run.
PREFLIGHT_KEY = "nilemig_preflight"
CAPTURE_KEY = "nilemig_capture"
# The tenants.StepRunner of an online run, where for_each_tenant registers its steps.
STEP_RUNNER_KEY = "nilemig_step_runner"
# pytest-alembic and Alembic's cookbook hand a live connection over under this key.
CONNECTION_KEY = "connection"

# nilemig's own tables, beside Alembic's.
LEDGER_TABLE = "nilemig_ledger"
VERSION_TABLE = "alembic_version"
STEPS_TABLE = "nilemig_steps"  # shared: one row per for_each_tenant step a migration registered
STEP_TENANTS_TABLE = "nilemig_step_tenants"  # tenant-aware: one row per tenant a step is done for
STEP_FAILURES_TABLE = "nilemig_step_failures"  # tenant-aware: the last error of a tenant not done yet
BOOKKEEPING_TABLES = frozenset({LEDGER_TABLE, STEPS_TABLE, STEP_TENANTS_TABLE, STEP_FAILURES_TABLE})
