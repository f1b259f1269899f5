"""`steps`: see, finish, retry, skip or abandon the per-tenant steps of applied migrations."""

from __future__ import annotations
