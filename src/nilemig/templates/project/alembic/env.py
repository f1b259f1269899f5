"""Alembic environment, written by `nilemig init`.

The Nile-specific work lives in the nilemig package, so upgrading nilemig fixes
every project: reading DATABASE_URL (environment, then .env), making it a
psycopg 3 URL, one transaction per migration, and keeping autogenerate away
from Nile's built-in tables. Plain `alembic` commands run through here too.
"""

from alembic import context

from models import Base
from nilemig.alembic_env import run_migrations

run_migrations(context, target_metadata=Base.metadata)
