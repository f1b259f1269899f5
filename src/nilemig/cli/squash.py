"""`squash`: collapse the start of a long chain into one verified migration."""

from __future__ import annotations
