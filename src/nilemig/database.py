"""Connecting to the database, and explaining why a connection failed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from nilemig.config import PASSWORD_ENV_VAR
from nilemig.errors import NilemigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine

    from nilemig.config import Database

CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "nilemig"

LOCK_NOT_AVAILABLE = "55P03"
INSUFFICIENT_PRIVILEGE = "42501"
# Failures another session causes, that running the same transaction again may not meet: what each means.
TRANSIENT_FAILURES = {
    LOCK_NOT_AVAILABLE: "could not lock a table within the table lock timeout",
    "40001": "failed on a serialization conflict with another session",
    "40P01": "was chosen to break a deadlock with another session",
}


def failure_reason(exc: BaseException) -> str:
    """The database's own message for a failed statement (its first line), else the exception's."""
    orig = getattr(exc, "orig", None)
    text = getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig or exc)
    return text.strip().splitlines()[0].rstrip(".") if text.strip() else type(exc).__name__


def sqlstate(exc: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of a failed statement (through SQLAlchemy's wrapper, or psycopg's own error)."""
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


def create_engine(url: URL) -> Engine:
    """An engine fit for Nile: no pooling in a CLI, no server-side prepared statements, which Nile's
    connection-pooling gateway does not keep between queries, and no look-up of the hstore type on connect
    (3 of a connection's 11 round trips; SQLAlchemy's own HSTORE conversion serves the rare hstore column)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(
        url,
        poolclass=NullPool,
        use_native_hstore=False,
        connect_args={
            "prepare_threshold": None,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": APPLICATION_NAME,
        },
    )


def libpq_dsn(url: URL) -> str:
    """The URL as libpq (psycopg.connect) takes it, password included: never print it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def connect(database: Database) -> Connection:
    """Open a connection, turning the driver's connection errors into a NilemigError."""
    from sqlalchemy.exc import OperationalError

    try:
        return create_engine(database.url).connect()
    except OperationalError as exc:
        raise connection_error(exc, database) from None


def connection_error(exc: BaseException, database: Database) -> NilemigError:
    """Explain a failed connection in one paragraph, saying what to check next."""
    from nilemig.config import display_url, url_user

    detail = str(getattr(exc, "orig", exc)).strip().splitlines()
    first = detail[0] if detail else type(exc).__name__
    text = " ".join(detail).lower()
    where = display_url(database.url)
    host = database.url.host or database.url.query.get("host") or "the database server"
    user = url_user(database.url)
    if "no password supplied" in text:
        reason = (
            f"the server asks user {user!r} for a password and none was given. Put it in the URL in "
            f"{database.source} (URL-encoded), or leave the URL without one and set {PASSWORD_ENV_VAR} "
            "or add a line to ~/.pgpass (libpq reads both)."
        )
    elif "password authentication failed" in text or "authentication failed" in text:
        reason = (
            f"the server rejected the password for user {user!r} (from {_password_source(database)}). "
            f"Copy the credentials again from the Nile console."
        )
    elif "could not translate host name" in text or "failed to resolve host" in text or "name or service not known" in text:
        reason = (f"the host {host!r} could not be found. Check the host name in {database.source} for typos, "
                  "and that this machine can resolve it (network, VPN, DNS).")
    elif "connection refused" in text:
        reason = (
            f"{host} refused the connection: no database server is listening there. "
            "Check the host and port, and that the server is running."
        )
    elif "timeout expired" in text or "timed out" in text:
        reason = (
            f"no answer from {host} within {CONNECT_TIMEOUT_SECONDS} s. "
            "Check the host, the port, and your network or firewall."
        )
    elif "does not exist" in text and "database" in text:
        reason = f"{first}. Check the database name at the end of the URL in {database.source}."
    else:
        reason = f"{first}."
    return NilemigError(f"Could not connect to {where}: {reason}")


def _password_source(database: Database) -> str:
    from nilemig.config import has_password

    if has_password(database.url):
        return database.source
    if os.environ.get(PASSWORD_ENV_VAR):
        return PASSWORD_ENV_VAR
    return os.environ.get("PGPASSFILE") or "~/.pgpass"


def timeout_columns(lock_seconds: float, statement_seconds: float) -> str:
    """SQL columns that set the session's timeouts, so a migration never queues forever behind another
    session's lock; a caller puts them in a statement it sends anyway, saving round trips."""
    # At least 1 ms: PostgreSQL reads 0 as "no timeout at all".
    return (f"set_config('lock_timeout', '{max(1, round(lock_seconds * 1000))}ms', false), "
            f"set_config('statement_timeout', '{max(1, round(statement_seconds * 1000))}ms', false)")


@contextmanager
def autocommit(connection: Connection) -> Iterator[Connection]:
    """Each statement its own transaction: no BEGIN and COMMIT round trips around reads and the lock."""
    previous = connection.default_isolation_level  # known since connect; get_isolation_level() asks the server
    connection.execution_options(isolation_level="AUTOCOMMIT")
    try:
        yield connection
    finally:
        if not connection.closed and not connection.invalidated:
            connection.commit()  # ends SQLAlchemy's own transaction object; the server has none to end
            connection.execution_options(isolation_level=previous)
