"""How a migration run waits and times out: the defaults, and the settings a run carries.

Plain values with no heavy imports, so the command line can show the defaults in
`nilemig up --help` without loading SQLAlchemy or Alembic.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LOCK_WAIT_SECONDS = 60.0  # for the migration lock another runner holds
TABLE_LOCK_TIMEOUT_SECONDS = 10.0  # PostgreSQL lock_timeout: never queue behind a long lock
STATEMENT_TIMEOUT_SECONDS = 900.0  # PostgreSQL statement_timeout for every statement
RETRIES = 5  # times a migration that lost a lock race (or a deadlock) is rolled back and run again
RETRY_BACKOFF_SECONDS = 1.0  # the first retry's delay; it doubles with every retry, with jitter
RETRY_BACKOFF_MAX_SECONDS = 30.0
TENANT_WORKERS = 4  # connections a for_each_tenant step runs tenants on


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class RunSettings:
    """How a migration run waits and times out; `nilemig up --help` documents the flags."""

    lock_wait_seconds: float = LOCK_WAIT_SECONDS
    table_lock_timeout_seconds: float = TABLE_LOCK_TIMEOUT_SECONDS
    statement_timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS
    retries: int = RETRIES
    on_notice: Callable[[str], None] = field(default=_to_stderr)
    tenant_workers: int = TENANT_WORKERS
    # Makes a tenants.Progress for each for_each_tenant step (a bar on a terminal); None: plain lines via on_notice.
    step_progress: Callable[[], Any] | None = None
