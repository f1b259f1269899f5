"""`nilemig verify`: replay every migration up -> down -> up on a scratch database with Nile's
built-ins, then compare head with the models. Never touches the database in DATABASE_URL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nilemig.config import display_url
from nilemig.core import (
    alembic_config,
    display_path,
    failing_frame,
    script_directory,
)
from nilemig.database import failure_reason, libpq_dsn
from nilemig.errors import NilemigError

if TYPE_CHECKING:
    import psycopg
    from alembic.script import Script

    from nilemig.config import Database, Project


@dataclass
class Failure:
    kind: str  # heads, upgrade, downgrade, round trip, models
    revision: str | None
    file: str | None
    message: str
    details: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyResult:
    steps: int
    failures: list[Failure]
    scratch: str  # the scratch database's URL, password masked
    kept: bool

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": self.steps, "scratch_database": self.scratch, "kept": self.kept,
                "failures": [f.to_json() for f in self.failures]}


@contextmanager
def scratch_database(project: Project | None, scratch_url: str | None, keep: bool = False,
                     source: str = "--scratch-url", prefix: str = "nilemig_verify") -> Iterator[Database]:
    """A new database set up as Nile gives it (built-ins, extensions, strictness, tenant context), on the
    local server (of `project`) or on `scratch_url`'s server (which `source` names in errors); migrations run
    in it as a role that is not a superuser. Dropped afterwards unless `keep`."""
    import psycopg

    from nilemig import local
    from nilemig.config import Database, normalise_url

    admin = normalise_url(scratch_url, source) if scratch_url else local.admin_url(project)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        url = local.create_database(admin, name, None if scratch_url else local.pgdata_dir(project))
    except psycopg.Error as exc:
        raise NilemigError(
            f"Could not create a scratch database on {display_url(admin)}: "
            f"{str(exc).strip().splitlines()[0]}. {source} needs a PostgreSQL server where this user is a "
            f"superuser: nilemig creates the database, the role {local.DEVELOPER_ROLE} that migrations run as, "
            "and an event trigger (it never uses the database in DATABASE_URL)."
        ) from None
    try:
        yield Database(url, source if scratch_url else "local")
    finally:
        if not keep:
            local.drop_database(admin, name)


SEED_TENANTS = 3
# Values for the required columns of seeded rows, by information_schema data type.
_SEED_VALUES = {
    "uuid": "gen_random_uuid()", "text": "'nilemig verify'", "character varying": "'nilemig verify'",
    "integer": "1", "bigint": "1", "smallint": "1", "numeric": "0", "double precision": "0", "real": "0",
    "boolean": "false", "date": "current_date", "timestamp without time zone": "localtimestamp",
    "timestamp with time zone": "now()", "jsonb": "'{}'", "json": "'{}'",
}


def uses_steps(scripts: list[Script]) -> bool:
    return any("for_each_tenant" in open(s.path, encoding="utf-8").read() for s in scripts)


def seed_tenants(connection: psycopg.Connection) -> None:
    connection.execute(f"INSERT INTO tenants (name) SELECT 'nilemig verify ' || g FROM generate_series(1, {SEED_TENANTS}) g")


def seed_tenant_rows(connection: psycopg.Connection) -> None:
    """One row per tenant in each empty tenant-aware table, so for_each_tenant steps have work to do.

    Best effort: a table whose required columns have types without a seed value, or whose
    constraints reject the row, stays empty.
    """
    import psycopg
    from psycopg import sql

    from nilemig.keys import BOOKKEEPING_TABLES

    required: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in connection.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.columns t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "AND t.column_name = 'tenant_id' AND t.data_type = 'uuid' "
        "WHERE c.table_schema = 'public' AND c.column_name <> 'tenant_id' AND c.is_nullable = 'NO' "
        "AND c.column_default IS NULL AND c.is_identity = 'NO' AND c.is_generated = 'NEVER'"
    ):
        required.setdefault(table, []).append((column, kind))
    for (table,) in connection.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
        "AND column_name = 'tenant_id' AND data_type = 'uuid'"
    ).fetchall():
        columns = required.get(table, [])
        if table in BOOKKEEPING_TABLES or any(kind not in _SEED_VALUES for _, kind in columns):
            continue
        statement = sql.SQL("INSERT INTO {table} ({columns}) SELECT id{values} FROM tenants WHERE NOT EXISTS "
                            "(SELECT 1 FROM {table})").format(
            table=sql.Identifier(table),
            columns=sql.SQL(", ").join(sql.Identifier(c) for c in ["tenant_id", *(c for c, _ in columns)]),
            values=sql.SQL("".join(f", {_SEED_VALUES[kind]}" for _, kind in columns)))
        try:
            connection.execute(statement)
        except psycopg.Error:
            continue


def _failure(kind: str, script: Script, exc: BaseException, project: Project) -> Failure:
    frame = failing_frame(exc, project.root)
    where = f", line {frame.lineno}" if frame is not None and frame.filename == script.path else ""
    return Failure(kind, script.revision, display_path(script.path),
                   f"{kind} of {script.revision} ({script.doc}) failed{where}: {failure_reason(exc)}")


def verify(project: Project, scratch_url: str | None = None, keep: bool = False,
           on_step: Callable[[str], None] | None = None, on_start: Callable[[int], None] | None = None
           ) -> VerifyResult:
    import psycopg
    from alembic import command

    from nilemig.commands.autogen import diff
    from nilemig.keys import SETTINGS_KEY
    from nilemig.runsettings import RunSettings
    from nilemig.snapshot import differences, snapshot
    from nilemig.tenants import StepFailed

    scripts = script_directory(project, alembic_config(project))
    chain = list(reversed(list(scripts.walk_revisions())))
    failures: list[Failure] = []
    heads = scripts.get_heads()
    if len(heads) > 1:
        failures.append(Failure("heads", None, None, f"{len(heads)} heads: {', '.join(heads)}; merge them "
                                "(`alembic merge heads`) or fix a down_revision", []))
        chain = []
    if on_start is not None:
        on_start(len(chain) + 1)
    with scratch_database(project, scratch_url, keep) as database, \
            psycopg.connect(libpq_dsn(database.url), autocommit=True) as inspector:
        config = alembic_config(project, database)
        config.attributes[SETTINGS_KEY] = RunSettings(on_notice=lambda message: None)
        # for_each_tenant steps run on a few tenants with a row in each tenant-aware table.
        seeding = uses_steps(chain)
        if seeding:
            seed_tenants(inspector)

        def state() -> frozenset[str]:
            return snapshot(inspector)

        def attempt(kind: str, script: Script, alembic_command: Callable[..., None], target: str) -> bool:
            try:
                alembic_command(config, target)
                return True
            except StepFailed as exc:
                failures.append(Failure(kind, script.revision, display_path(script.path),
                                        f"{kind} of {script.revision} ({script.doc}): {exc}"))
                return False
            except NilemigError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failing migration is what verify reports
                failures.append(_failure(kind, script, exc, project))
                return False

        previous = state()
        for script in chain:
            if on_step is not None:
                on_step(f"{script.revision} {script.doc}")
            # A merge has several parents: step back one instead of naming them.
            down_to = "-1" if isinstance(script.down_revision, tuple) else (script.down_revision or "base")
            if not attempt("upgrade", script, command.upgrade, script.revision):
                break
            if seeding:
                seed_tenant_rows(inspector)
            applied = state()
            if attempt("downgrade", script, command.downgrade, down_to):
                if (left := differences(previous, state())):
                    failures.append(Failure("downgrade", script.revision, display_path(script.path),
                                            f"downgrade of {script.revision} ({script.doc}) does not undo its "
                                            "upgrade: the schema differs from before the upgrade", left))
                if not attempt("upgrade", script, command.upgrade, script.revision):
                    break
                if (changed := differences(applied, state())):
                    failures.append(Failure("round trip", script.revision, display_path(script.path),
                                            f"{script.revision} ({script.doc}): up -> down -> up gives a different "
                                            "schema than the first up", changed))
            previous = state()
        if on_step is not None:
            on_step("models")
        if chain and not any(f.kind == "upgrade" for f in failures):
            drift = diff(project, database)
            if drift:
                head = chain[-1]
                failures.append(Failure("models", head.revision, display_path(head.path),
                                        f"the models differ from the schema at head ({head.revision}): "
                                        "run `nilemig autogen` to write the missing migration",
                                        [d.code.replace("\n", " ") for d in drift]))
        scratch = display_url(database.url)
    return VerifyResult(len(chain), failures, scratch, keep)
