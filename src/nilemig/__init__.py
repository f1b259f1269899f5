"""nilemig: safe, Nile-aware database migrations on top of Alembic."""

__version__ = "0.1.0"
