"""`heads`, `show`, `merge`: the revision graph, as Alembic users know these commands."""

from __future__ import annotations
