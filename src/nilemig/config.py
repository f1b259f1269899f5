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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from nilemig.errors import NilemigError, redact, register_secret

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

INI_NAME = "alembic.ini"
ENV_VAR = "DATABASE_URL"
DRIVER = "postgresql+psycopg"
# Every spelling that means "PostgreSQL" to some tool; all are served by psycopg 3.
_POSTGRES_SCHEMES = {"postgres", "postgresql"}
NILE_HOST_SUFFIX = ".thenile.dev"


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
        return f"Database: {self.url.render_as_string(hide_password=True)} (from {self.source})"


def read_dotenv(project: Project) -> dict[str, str | None]:
    if not project.dotenv_path.is_file():
        return {}
    from dotenv import dotenv_values

    return dict(dotenv_values(project.dotenv_path))


def configured_url(project: Project, cli_url: str | None = None) -> tuple[str, str] | None:
    """The raw URL the user configured and where it came from, or None when none is."""
    if cli_url is not None:
        return cli_url, "--database-url"
    if ENV_VAR in os.environ:
        return os.environ[ENV_VAR], f"{ENV_VAR} in the environment"
    dotenv = read_dotenv(project)
    if ENV_VAR in dotenv:
        return dotenv[ENV_VAR] or "", f"{ENV_VAR} in {project.dotenv_path.name}"
    return None


def choose_database(project: Project, cli_url: str | None = None) -> Database | None:
    """The configured database, or None for the local development database (started by `core.resolve_database`)."""
    configured = configured_url(project, cli_url)
    if configured is not None:
        raw, source = configured
        return Database(normalise_url(raw, source), source)
    if os.environ.get("CI"):
        raise NilemigError(
            f"No database configured, and CI is set: nilemig will not fall back to a local database in CI. "
            f"Set {ENV_VAR} (or pass --database-url) to the database this job should migrate."
        )
    return None


def normalise_url(raw: str, source: str = ENV_VAR) -> URL:
    """Turn what a user pastes from the Nile console into a URL SQLAlchemy and psycopg 3 accept.

    `postgres://` and `postgresql://` become `postgresql+psycopg://`; percent-encoded
    characters in the password survive; a Nile host gets `sslmode=require` unless the
    URL says otherwise.
    """
    raw = raw.strip()
    if not raw:
        raise NilemigError(
            f"{source} is empty. Set it to your database's URL, e.g. "
            "postgres://USER:PASSWORD@us-west-2.db.thenile.dev:5432/DBNAME (copy it from the Nile console), "
            f"or remove it to use the local development database."
        )
    shown = redact(raw)
    if "://" not in raw:
        raise NilemigError(
            f"{source} is not a URL: {shown!r}. Expected postgres://USER:PASSWORD@HOST:5432/DBNAME."
        )
    scheme, rest = raw.split("://", 1)
    base_scheme = scheme.split("+", 1)[0].lower()
    if base_scheme not in _POSTGRES_SCHEMES:
        guess = difflib.get_close_matches(base_scheme, sorted(_POSTGRES_SCHEMES), n=1)
        hint = f" Did you mean {guess[0]}://?" if guess else ""
        raise NilemigError(
            f"{source} has an unsupported scheme {scheme!r} ({shown}).{hint} "
            "nilemig talks to Nile and PostgreSQL: use postgres:// or postgresql://."
        )
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise NilemigError(f"{source} is malformed ({shown}): {exc}.") from None
    register_secret(unquote(parts.password) if parts.password else None)
    host_in_query = "host" in parse_qs(parts.query)
    if not parts.hostname and not host_in_query:
        raise NilemigError(
            f"{source} has no host ({shown}). Expected postgres://USER:PASSWORD@HOST:5432/DBNAME."
        )

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(f"{DRIVER}://{rest}")
    except ArgumentError:
        raise NilemigError(f"{source} could not be parsed as a database URL ({shown}).") from None
    if url.host and url.host.endswith(NILE_HOST_SUFFIX) and "sslmode" not in url.query:
        url = url.update_query_dict({"sslmode": "require"})
    return url

