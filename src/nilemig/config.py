"""Finding the project, choosing the database, and normalising its URL.

Which database a command uses: `--database-url` > `DATABASE_URL` in the
environment > `DATABASE_URL` in the project's `.env` > the local development
database. Choosing is a plain value here; starting the local database is left to
`core.resolve_database`, which the CLI and the generated env.py both call, so plain
`alembic` and `nilemig` always agree.

Nothing here imports SQLAlchemy at module level: `nilemig --help` stays fast.
"""

from __future__ import annotations

import difflib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from nilemig.errors import (
    NilemigError,
    redact,
    register_secret,
    register_secrets_in,
    url_password,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

INI_NAME = "alembic.ini"
ENV_VAR = "DATABASE_URL"
DRIVER = "postgresql+psycopg"
# Every spelling that means "PostgreSQL" to some tool; all are served by psycopg 3.
_POSTGRES_SCHEMES = {"postgres", "postgresql"}
NILE_HOST_SUFFIX = ".thenile.dev"
EXAMPLE_URL = "postgres://USER:PASSWORD@HOST:5432/DBNAME"
# The environment variable libpq reads a password from when the URL carries none.
PASSWORD_ENV_VAR = "PGPASSWORD"
# The start of a libpq keyword/value connection string: `host=... user=... password=...`.
_CONNINFO = re.compile(r"\s*[a-z_]+\s*=")


@dataclass(frozen=True)
class Project:
    """A directory holding an alembic.ini written by `nilemig init` (or any Alembic project)."""

    root: Path
    section: str = "alembic"  # the ini section Alembic reads (`alembic -n NAME`)

    @property
    def ini_path(self) -> Path:
        return self.root / INI_NAME

    @property
    def dotenv_path(self) -> Path:
        return self.root / ".env"

    @property
    def state_dir(self) -> Path:
        """Where the local development database keeps its files (git-ignored)."""
        return self.root / ".nilemig"


def find_project(start: Path | None = None) -> Project:
    """The nearest directory at or above `start` that has an alembic.ini."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / INI_NAME).is_file():
            return Project(directory)
    raise NilemigError(
        f"No nilemig project here: no {INI_NAME} in {here} or any directory above it. "
        "Run `nilemig init` to create one, or `cd` into your project."
    )


@dataclass(frozen=True)
class Database:
    """The database a command runs against, and where that choice came from."""

    url: URL
    source: str

    @property
    def is_local(self) -> bool:
        return self.source == "local"

    def describe(self) -> str:
        if self.is_local:
            return f"Database: local development database {self.url.database!r} (in .nilemig/)"
        return f"Database: {display_url(self.url)} (from {self.source})"


def display_url(url: URL) -> str:
    """The URL as nilemig shows it anywhere (messages, JSON): every password masked, in the user-info or the query."""
    return redact(url.render_as_string(hide_password=True))


def has_password(url: URL) -> bool:
    return bool(url.password) or "password" in url.query


def url_user(url: URL) -> str:
    """The user libpq logs in as: the URL's, else its `?user=`, else PGUSER, else the operating-system user."""
    import getpass

    user = url.username or url.query.get("user") or os.environ.get("PGUSER")
    if isinstance(user, tuple):
        user = user[0]
    return user or getpass.getuser()


def read_dotenv(project: Project) -> dict[str, tuple[str | None, int]]:
    """NAME -> (value, line) from the project's .env; a line python-dotenv cannot parse is an error,
    never skipped: skipping a malformed DATABASE_URL would silently migrate the local database instead."""
    path = project.dotenv_path
    if not path.is_file():
        return {}
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NilemigError(f"Could not read {path}: {exc}. Fix the file, or remove it.") from None
    lines = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # The line itself is never shown: it may hold a password.
            name = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)", binding.original.string)
            which = f" (the line starting with {name[1]})" if name else ""
            raise NilemigError(
                f"{path}, line {binding.original.line}{which}, could not be parsed. Write it as NAME=value, e.g. "
                f"{ENV_VAR}={EXAMPLE_URL} (quotes are optional). nilemig reads no database from a .env it cannot "
                "parse, and does not fall back to the local development database."
            )
        if binding.key is not None:
            lines[binding.key] = binding.original.line
    # dotenv_values also expands ${VARIABLES}, which the parser alone does not.
    values = dotenv_values(stream=io.StringIO(text))
    return {key: (value, lines.get(key, 0)) for key, value in values.items()}


def configured_url(project: Project, cli_url: str | None = None) -> tuple[str, str, str] | None:
    """The raw URL the user configured, where it came from, and where exactly (for errors), or None."""
    if cli_url is not None:
        return cli_url, "--database-url", "--database-url"
    if ENV_VAR in os.environ:
        source = f"{ENV_VAR} in the environment"
        return os.environ[ENV_VAR], source, source
    dotenv = read_dotenv(project)
    if ENV_VAR in dotenv:
        value, line = dotenv[ENV_VAR]
        source = f"{ENV_VAR} in {project.dotenv_path.name}"
        return value or "", source, f"{source} (line {line})"
    return None


def choose_database(project: Project, cli_url: str | None = None) -> Database | None:
    """The configured database, or None for the local development database (started by `core.resolve_database`)."""
    configured = configured_url(project, cli_url)
    if configured is not None:
        raw, source, where = configured
        return Database(normalise_url(raw, where), source)
    if os.environ.get("CI"):
        raise NilemigError(
            f"No database configured, and CI is set: nilemig will not fall back to a local database in CI. "
            f"Set {ENV_VAR} (or pass --database-url) to the database this job should migrate."
        )
    return None


def normalise_url(raw: str, source: str = ENV_VAR) -> URL:
    """Turn what a user pastes from the Nile console into a URL SQLAlchemy and psycopg 3 accept.

    The one parser of database URLs: every password in `raw` is registered for masking
    before anything else, so no message can echo it. `postgres://` and `postgresql://`
    become `postgresql+psycopg://`; percent-encoded characters in the password survive;
    a libpq keyword/value string (`host=... dbname=...`) is accepted too; a Nile host gets
    `sslmode=require` unless the URL says otherwise.
    """
    register_secrets_in(raw)
    register_secret(os.environ.get(PASSWORD_ENV_VAR))
    raw = raw.strip()
    if not raw:
        raise NilemigError(
            f"{source} is empty. Set it to your database's URL, e.g. "
            "postgres://USER:PASSWORD@us-west-2.db.thenile.dev:5432/DBNAME (copy it from the Nile console), "
            f"or remove it to use the local development database."
        )
    shown = redact(raw)
    if "://" not in raw:
        if _CONNINFO.match(raw):
            return _nile_ssl(_conninfo_url(raw, source))
        hint = f" Put postgres:// in front of it: postgres://{shown}." if "@" in raw else ""
        raise NilemigError(f"{source} is not a URL: {shown!r}.{hint} Expected {EXAMPLE_URL}.")
    scheme, rest = raw.split("://", 1)
    base_scheme = scheme.split("+", 1)[0].lower()
    if base_scheme not in _POSTGRES_SCHEMES:
        guess = difflib.get_close_matches(base_scheme, sorted(_POSTGRES_SCHEMES), n=1)
        hint = f" Did you mean {guess[0]}://?" if guess else ""
        raise NilemigError(
            f"{source} has an unsupported scheme {scheme!r} ({shown}).{hint} "
            "nilemig talks to Nile and PostgreSQL: use postgres:// or postgresql://."
        )
    parts = urlsplit(raw)
    password = url_password(raw)
    if password is not None and ("@" in password or parts.password != password):
        # SQLAlchemy and libpq would split such a URL elsewhere and send part of the password to DNS as a host.
        raise NilemigError(
            f"The password in {source} contains a character that must be URL-encoded ({shown}): write @ as %40, "
            "/ as %2F, ? as %3F, # as %23, : as %3A and % as %25. Nothing was sent over the network."
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise NilemigError(f"{source} is malformed ({shown}): {exc}. Expected {EXAMPLE_URL}.") from None
    host_in_query = "host" in parse_qs(parts.query)
    if not parts.hostname and not host_in_query:
        raise NilemigError(f"{source} has no host ({shown}). Expected {EXAMPLE_URL}.")

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(f"{DRIVER}://{rest}")
    except ArgumentError:
        raise NilemigError(f"{source} could not be parsed as a database URL ({shown}).") from None
    return _nile_ssl(url)


def _conninfo_url(raw: str, source: str) -> URL:
    """A libpq keyword/value string (`host=h port=5432 user=u password=p dbname=d`) as a URL."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    try:
        options = {key: str(value) for key, value in conninfo_to_dict(raw).items()}
    except ProgrammingError as exc:
        raise NilemigError(f"{source} is neither a URL nor a valid libpq keyword/value string ({redact(raw)}): "
                           f"{redact(str(exc))}. Expected {EXAMPLE_URL}.") from None
    port = options.pop("port", None)
    if port is not None and not port.isdigit():
        raise NilemigError(f"{source} has a port that is not a number: {port!r}. Expected {EXAMPLE_URL}.")
    if "host" not in options and "hostaddr" not in options:
        raise NilemigError(f"{source} has no host ({redact(raw)}). Add host=HOST, or use {EXAMPLE_URL}.")
    return URL.create(DRIVER, username=options.pop("user", None), password=options.pop("password", None),
                      host=options.pop("host", None), port=int(port) if port else None,
                      database=options.pop("dbname", None), query=options)


def _nile_ssl(url: URL) -> URL:
    if url.host and url.host.endswith(NILE_HOST_SUFFIX) and "sslmode" not in url.query:
        url = url.update_query_dict({"sslmode": "require"})
    return url
