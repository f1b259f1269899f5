"""One migration run at a time: a PostgreSQL advisory lock around every `up` and `down`.

The lock is taken before Alembic reads the current revision, so concurrent runners
apply each migration exactly once: the second waits, then finds nothing left to do.
It is a session lock, so a runner that dies (even `kill -9`) releases it with its connection.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nilemig.errors import NilemigError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

NAMESPACE = "nilemig migration lock"
POLL_SECONDS = 0.2


def lock_key(version_table: str = "alembic_version", schema: str | None = None) -> int:
    """A stable signed 64-bit key from nilemig's namespace and the version table."""
    digest = hashlib.sha256(f"{NAMESPACE}:{schema or ''}.{version_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def holder(connection: Connection, key: int) -> str:
    """Who holds the lock, as far as pg_stat_activity lets this user see."""
    from sqlalchemy import text

    row = connection.execute(text(
        "SELECT l.pid, a.application_name, a.usename, a.client_addr, a.backend_start "
        "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
    ), {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).first()
    connection.commit()
    if row is None:
        return "another session (not visible to this user)"
    pid, application, user, address, started = row
    parts = [f"pid {pid}"]
    if application:
        parts.append(f"application {application!r}")
    if user:
        parts.append(f"user {user!r}")
    if address:
        parts.append(f"from {address}")
    if started:
        parts.append(f"connected since {started:%Y-%m-%d %H:%M:%S}")
    return ", ".join(parts)


def acquire(connection: Connection, wait_seconds: float, on_wait: Callable[[str], None], key: int | None = None,
            also: str = "") -> tuple:
    """Take the lock, waiting up to `wait_seconds`; return the row of the statement that took it, whose
    columns after the first are `also` (SQL columns a run needs anyway, sent in the same round trip).

    The caller releases the lock (pg_advisory_unlock), or closes the connection, which releases it too.
    """
    from sqlalchemy import text

    key = lock_key() if key is None else key
    deadline = time.monotonic() + wait_seconds
    announced = False
    while True:
        row = connection.execute(text(f"SELECT pg_try_advisory_lock(:key){', ' + also if also else ''}"),
                                 {"key": key}).one()
        connection.commit()
        if row[0]:
            return tuple(row)
        who = holder(connection, key)
        if not announced:
            on_wait(f"Another migration run holds the lock ({who}); waiting up to {wait_seconds:g} s...")
            announced = True
        if time.monotonic() >= deadline:
            raise NilemigError(
                f"Gave up after waiting {wait_seconds:g} s for the migration lock, held by {who}. "
                "Another `nilemig up`/`down` (or `alembic upgrade`) is running against this database: let it "
                "finish and run again, or wait longer with --lock-timeout SECONDS. Nothing was applied."
            )
        time.sleep(POLL_SECONDS)


@contextmanager
def migration_lock(connection: Connection, wait_seconds: float, on_wait: Callable[[str], None],
                   key: int | None = None) -> Iterator[None]:
    from sqlalchemy import text

    key = lock_key() if key is None else key
    acquire(connection, wait_seconds, on_wait, key)
    try:
        yield
    finally:
        if not connection.closed and not connection.invalidated:
            try:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                connection.commit()
            except Exception:  # noqa: BLE001 - closing the session releases the lock anyway
                pass
