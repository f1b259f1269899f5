"""Per-tenant data migrations: `for_each_tenant` in a migration, and the runner that applies
each step once for every tenant, each tenant in its own transaction under `SET LOCAL nile.tenant_id`.

Why it is exactly once, whatever kills the run:
- A migration's steps are recorded in `nilemig_steps` (shared) in the migration's own
  transaction, with its version bump: a step exists exactly when its migration is applied.
- That transaction commits; then, before the next migration starts, each tenant runs in a
  transaction of its own that also inserts (step, tenant) into `nilemig_step_tenants`. That
  table is tenant-aware (tenant_id in its primary key), so the insert is a single-tenant write,
  legal on Nile; its primary key makes a second attempt at a tenant fail and roll back its
  work. A tenant's work commits together with its progress row, or not at all.
- A step is marked complete once no tenant is left. A run that finds an incomplete step
  finishes it before it applies any migration.
"""

from __future__ import annotations

import contextvars
import io
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from nilemig.database import (
    APPLICATION_NAME,
    CONNECT_TIMEOUT_SECONDS,
    connection_error,
    create_engine,
    libpq_dsn,
)
from nilemig.errors import AnswerIsNo, NilemigError
from nilemig.keys import (
    STEP_FAILURES_TABLE,
    STEP_RUNNER_KEY,
    STEP_TENANTS_TABLE,
    STEPS_TABLE,
)
from nilemig.runsettings import RunSettings

if TYPE_CHECKING:
    import psycopg
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

    from nilemig.config import Database

Action = Callable[[Any, uuid.UUID], Any]

DEFAULT_TENANTS = "SELECT id FROM tenants WHERE deleted IS NULL"
PAGE_SIZE = 1000
# Lock timeout, serialization failure, deadlock; class 08 and 57P01-03 are lost connections.
TRANSIENT_SQLSTATES = frozenset({"55P03", "40001", "40P01", "57P01", "57P02", "57P03"})
ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 5.0
ERRORS_SHOWN = 5
TICK_SECONDS = 0.1  # how often the progress is brought up to date
TEMPLATE_MARK = "-- nilemig: for_each_tenant "
_EACH_TENANT = "SET LOCAL nile.tenant_id = '<each tenant>';"
_CALLABLE_MARK = "-- (Python callable "

_CREATE = (
    f"""CREATE TABLE IF NOT EXISTS {STEPS_TABLE} (
        id uuid PRIMARY KEY,
        revision text NOT NULL,
        direction text NOT NULL,
        name text NOT NULL,
        sql text,
        tenants text,
        registered_at timestamptz NOT NULL DEFAULT now(),
        completed_at timestamptz,
        abandoned_at timestamptz
    )""",
    f"""CREATE TABLE IF NOT EXISTS {STEP_TENANTS_TABLE} (
        step_id uuid NOT NULL,
        tenant_id uuid NOT NULL,
        done_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (step_id, tenant_id)
    )""",
    f"""CREATE TABLE IF NOT EXISTS {STEP_FAILURES_TABLE} (
        step_id uuid NOT NULL,
        tenant_id uuid NOT NULL,
        error text NOT NULL,
        failed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (step_id, tenant_id)
    )""",
)
_STEP_COLUMNS = "id, revision, direction, name, sql, tenants"
_DONE = f"EXISTS (SELECT 1 FROM {STEP_TENANTS_TABLE} d WHERE d.step_id = %(step)s AND d.tenant_id = t.id)"
_FAILED_SINCE = (f"EXISTS (SELECT 1 FROM {STEP_FAILURES_TABLE} f WHERE f.step_id = %(step)s AND f.tenant_id = t.id "
                 "AND f.failed_at >= %(since)s)")


@dataclass
class Step:
    id: str
    revision: str
    direction: str  # "upgrade" or "downgrade": the migration function that registered it
    name: str
    sql: str | None  # None for a Python callable, which is found again in the migration file to resume
    tenants: str | None  # the query choosing the tenants; None: every tenant not deleted
    action: Action | None = None

    @property
    def selection(self) -> str:
        return self.tenants or DEFAULT_TENANTS

    def describe(self) -> str:
        where = "" if self.direction == "upgrade" else " (downgrade)"
        return f"step {self.name!r} of {self.revision}{where}"


# --- In a migration file ---------------------------------------------------------------------------

# While a paused step's callable is looked up again (to resume it), for_each_tenant hands it over here.
_captured: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("nilemig_steps", default=None)


def for_each_tenant(name: str, sql_or_callable: str | Action, tenants: str | None = None) -> None:
    """Run `sql_or_callable` once for every tenant, each in its own transaction with
    `SET LOCAL nile.tenant_id`, after this migration's transaction commits and before the next
    migration starts. Call it from `upgrade()` or `downgrade()`.

    `name` is unique within the migration. `sql_or_callable` is SQL (one or more statements), or
    a function given a SQLAlchemy connection and the tenant's `uuid.UUID`. `tenants` is a query
    whose first column is the tenant id (default: every tenant whose `deleted` is null).
    """
    _validate(name, sql_or_callable, tenants)
    captured = _captured.get()
    if captured is not None:
        captured[name] = sql_or_callable
        return
    from alembic import op

    try:
        context = op.get_context()
    except (NameError, AttributeError):  # no migration running: Alembic's proxy was never, or is no longer, set
        raise NilemigError(f"for_each_tenant({name!r}) was called outside a migration: call it from a "
                           "migration's upgrade() or downgrade().") from None
    if context.as_sql:
        context.impl.static_output(template(name, sql_or_callable, tenants))
        return
    runner = context.config.attributes.get(STEP_RUNNER_KEY) if context.config is not None else None
    if runner is None:
        raise NilemigError(
            f"for_each_tenant({name!r}) needs nilemig to run the migrations, each in its own transaction: "
            "`nilemig up`, or `alembic upgrade` with the env.py `nilemig init` writes (not inside a transaction "
            "the caller opened). This migration was rolled back."
        )
    runner.register(name, sql_or_callable, tenants)


def _validate(name: Any, sql_or_callable: Any, tenants: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise AnswerIsNo("for_each_tenant needs a name (a non-empty string, unique within the migration).")
    if not (callable(sql_or_callable) or (isinstance(sql_or_callable, str) and sql_or_callable.strip())):
        raise AnswerIsNo(f"for_each_tenant({name!r}) needs SQL (a non-empty string) or a function "
                           "taking (connection, tenant_id).")
    if tenants is not None and not (isinstance(tenants, str) and tenants.strip()):
        raise AnswerIsNo(f"for_each_tenant({name!r}): tenants= is a SELECT whose first column is the tenant id.")


def template(name: str, sql_or_callable: str | Action, tenants: str | None = None) -> str:
    """How `nilemig sql` shows a step: commented out, so the script stays runnable as it is."""
    if callable(sql_or_callable):
        what = getattr(sql_or_callable, "__qualname__", type(sql_or_callable).__name__)
        body = [f"{_CALLABLE_MARK}{what}, given a connection and the tenant id: its SQL is known only when it runs)"]
    else:
        body = [f"-- {line}" for line in sql_or_callable.strip().splitlines()]
        if not body[-1].rstrip().endswith(";"):
            body[-1] += ";"
    return "\n".join([
        f"{TEMPLATE_MARK}{name!r}",
        "-- Runs after this migration commits, once for each tenant of:",
        f"--   {tenants or DEFAULT_TENANTS}",
        "-- each tenant in its own transaction:",
        "-- BEGIN;",
        f"-- {_EACH_TENANT}",
        *body,
        "-- COMMIT;",
    ])


def template_sql(text: str) -> str | None:
    """The SQL of a step as `template` rendered it; None for other text and for callables."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith(TEMPLATE_MARK) or f"-- {_EACH_TENANT}" not in lines:
        return None
    body = lines[lines.index(f"-- {_EACH_TENANT}") + 1:-1]
    if not body or body[0].startswith(_CALLABLE_MARK):
        return None
    return "\n".join(line[3:] for line in body)


# --- Bookkeeping -------------------------------------------------------------------------------------


def _text(sql: str):
    from sqlalchemy import text

    return text(sql)


_EXISTS = f"SELECT to_regclass('{STEPS_TABLE}') IS NOT NULL"


def _record(connection: Connection, revision: str, direction: str, name: str, sql_or_callable: str | Action,
            tenants: str | None) -> Step:
    is_sql = isinstance(sql_or_callable, str)
    step = Step(str(uuid.uuid4()), revision, direction, name, sql_or_callable if is_sql else None, tenants,
                None if is_sql else sql_or_callable)
    connection.execute(_text(f"INSERT INTO {STEPS_TABLE} ({_STEP_COLUMNS}) "
                             "VALUES (:id, :revision, :direction, :name, :sql, :tenants)"),
                       {"id": step.id, "revision": revision, "direction": direction, "name": name,
                        "sql": step.sql, "tenants": tenants})
    return step


def incomplete(connection: psycopg.Connection) -> list[Step]:
    """Steps not complete yet (nor abandoned by a downgrade of their migration), oldest first."""
    if not connection.execute(_EXISTS).fetchone()[0]:
        return []
    rows = connection.execute(f"SELECT {_STEP_COLUMNS} FROM {STEPS_TABLE} "
                              "WHERE completed_at IS NULL AND abandoned_at IS NULL ORDER BY registered_at")
    return [Step(str(r[0]), *r[1:]) for r in rows]


@dataclass
class StepState:
    """How far an incomplete step got, for `nilemig status` and `history`."""

    step: Step
    total: int
    done: int
    failed: int
    errors: list[tuple[str, str]] = field(default_factory=list)  # (tenant id, error), the first few

    def describe(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.step.describe()} incomplete: {self.done}/{self.total} tenants done{failed}"

    def to_json(self) -> dict[str, Any]:
        s = self.step
        return {"revision": s.revision, "name": s.name, "direction": s.direction, "total": self.total,
                "done": self.done, "failed": self.failed,
                "errors": [{"tenant_id": t, "error": e} for t, e in self.errors]}


def states(database: Database) -> list[StepState]:
    """The incomplete steps and how far each got."""
    found = []
    with _connect(database, RunSettings()) as connection:
        for step in incomplete(connection):
            total, done = _counts(connection, step)
            errors = connection.execute(
                f"SELECT f.tenant_id, f.error FROM {STEP_FAILURES_TABLE} f WHERE f.step_id = %s AND NOT EXISTS "
                f"(SELECT 1 FROM {STEP_TENANTS_TABLE} d WHERE d.step_id = f.step_id AND d.tenant_id = f.tenant_id) "
                "ORDER BY f.failed_at", (step.id,)).fetchall()
            found.append(StepState(step, total, done, len(errors), [(str(t), e) for t, e in errors[:ERRORS_SHOWN]]))
    return found


def _counts(connection: psycopg.Connection, step: Step) -> tuple[int, int]:
    """(tenants the step covers, tenants done)."""
    return connection.execute(f"SELECT count(*), count(*) FILTER (WHERE {_DONE}) FROM ({step.selection}) AS t(id)",
                              {"step": step.id}).fetchone()


# --- Running steps -------------------------------------------------------------------------------------


class Progress(Protocol):
    """What a run reports to: `nilemig up` draws a bar on a terminal; otherwise `PlainProgress`."""

    def start(self, title: str, total: int, done: int) -> None: ...
    def update(self, done: int, failed: int) -> None: ...
    def finish(self, done: int, failed: int) -> None: ...


class PlainProgress:
    """Progress as plain lines (no terminal, plain `alembic`): one at the start, then every few seconds."""

    INTERVAL_SECONDS = 5.0

    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def start(self, title: str, total: int, done: int) -> None:
        self.title, self.total, self.before = title, total, done
        self.started = self.last = time.monotonic()
        earlier = f", {done} done before" if done else ""
        self.say(f"Running {title} for {total - done} tenant(s) of {total}{earlier}...")

    def update(self, done: int, failed: int) -> None:
        if time.monotonic() - self.last >= self.INTERVAL_SECONDS:
            self.last = time.monotonic()
            self.say(f"  {self.title}: {self._line(done, failed)}")

    def finish(self, done: int, failed: int) -> None:
        self.say(f"  {self.title}: {self._line(done, failed)}, {time.monotonic() - self.started:.1f} s")

    def _line(self, done: int, failed: int) -> str:
        rate = (done - self.before) / max(time.monotonic() - self.started, 1e-6)
        left = self.total - done - failed
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and left > 0 else ""
        return f"{done}/{self.total} tenants, {rate:.0f}/s{eta}, {failed} failed"


class StepFailed(AnswerIsNo):
    """Some tenants kept failing: the step stays incomplete, the database at its migration."""


class StepRunner:
    """Where `for_each_tenant` registers a migration's steps, and Alembic's last on_version_apply
    callback: it records them in the migration's transaction, commits it, and runs them."""

    def __init__(self, database: Database, settings: RunSettings, scripts: ScriptDirectory):
        self.database, self.settings, self.scripts = database, settings, scripts
        self._registered: list[tuple[str, str | Action, str | None]] = []

    def register(self, name: str, sql_or_callable: str | Action, tenants: str | None) -> None:
        if any(known == name for known, _, _ in self._registered):
            raise AnswerIsNo(f"This migration has two for_each_tenant steps named {name!r}: name each step of a "
                               "migration differently (progress is kept by name). This migration was rolled back.")
        self._registered.append((name, sql_or_callable, tenants))

    def __call__(self, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        connection = ctx.connection
        registered, self._registered = self._registered, []
        revision = step.up_revision_id
        if not step.is_upgrade and connection.execute(_text(_EXISTS)).scalar():
            # Undoing a migration abandons what its upgrade had left to do.
            connection.execute(_text(f"UPDATE {STEPS_TABLE} SET abandoned_at = now() WHERE revision = :revision "
                                     "AND direction = 'upgrade' AND completed_at IS NULL AND abandoned_at IS NULL"),
                               {"revision": revision})
        if not registered:
            return
        for statement in _CREATE:
            connection.execute(_text(statement))
        direction = "upgrade" if step.is_upgrade else "downgrade"
        steps = [_record(connection, revision, direction, *r) for r in registered]
        # The migration commits here, its steps recorded with it: from now on they exist until they complete.
        connection.commit()
        for s in steps:
            run_step(self.database, s, self.settings)

    def resume(self, migration_context: Any) -> None:
        """Before an upgrade applies anything, finish the steps an earlier run left incomplete.

        Downgrades do not resume, so that a step that cannot complete can be undone with its migration.
        Alembic's upgrade command hands the migration context a function named after it.
        """
        if getattr(migration_context.opts.get("fn"), "__name__", None) != "upgrade":
            return
        with _connect(self.database, self.settings) as connection:
            steps = incomplete(connection)
        for step in steps:
            if step.sql is None:
                step.action = self._callable(step)
            run_step(self.database, step, self.settings)

    def _callable(self, step: Step) -> Action:
        """A callable step's function, found again by running its migration function offline."""
        from alembic.operations import Operations
        from alembic.runtime.migration import MigrationContext

        script = self.scripts.get_revision(step.revision)
        context = MigrationContext.configure(dialect_name="postgresql",
                                             opts={"as_sql": True, "output_buffer": io.StringIO()})
        found: dict[str, Any] = {}
        token = _captured.set(found)
        try:
            with Operations.context(context):
                getattr(script.module, step.direction)()
        except Exception as exc:  # noqa: BLE001 - any failure means the function cannot be found again
            raise NilemigError(
                f"Cannot resume {step.describe()}: it is a Python function, found again by running "
                f"{step.direction}() of {script.path} without a database, and that raised "
                f"{type(exc).__name__}: {exc}. Make {step.direction}() reach its for_each_tenant call without "
                "a database connection (no op.get_bind() before it), then run again."
            ) from None
        finally:
            _captured.reset(token)
        action = found.get(step.name)
        if not callable(action):
            raise NilemigError(f"Cannot resume {step.describe()}: {script.path} no longer has a for_each_tenant "
                               f"step named {step.name!r} with a function. Restore it (e.g. from git) and run again.")
        return action


def prepare(context: Any, database: Database, settings: RunSettings) -> StepRunner:
    """The step runner of an online run, where for_each_tenant finds it."""
    runner = StepRunner(database, settings, context.script)
    context.config.attributes[STEP_RUNNER_KEY] = runner
    return runner


def run_step(database: Database, step: Step, settings: RunSettings) -> None:
    """Apply `step` to every tenant it has not been applied to; raise StepFailed naming tenants that kept failing."""
    reporter: Progress = settings.step_progress() if settings.step_progress else PlainProgress(settings.on_notice)
    with _connect(database, settings) as lister:
        since = lister.execute("SELECT now()").fetchone()[0]
        total, done_before = _counts(lister, step)
        run = _Run(database, step, settings)
        reporter.start(step.describe(), total, done_before)
        try:
            run.start()
            while True:
                succeeded = run.done
                for tenant in _pending(lister, step, since):
                    if not run.put(tenant, lambda: reporter.update(done_before + run.done, run.failed)):
                        break
                run.wait_idle(lambda: reporter.update(done_before + run.done, run.failed))
                # Another pass for tenants created meanwhile, while passes still get work done.
                if run.done == succeeded or run.fatal is not None:
                    break
        finally:
            run.stop()
            reporter.finish(done_before + run.done, run.failed)
        if run.fatal is not None:
            raise run.fatal
        if run.failed:
            listed = "; ".join(f"{tenant}: {error}" for tenant, error in run.errors)
            raise StepFailed(
                f"{step.describe().capitalize()} failed for {run.failed} of {total} tenant(s) (first errors: "
                f"{listed}). The other tenants' work is committed. The database stays at {step.revision} with the "
                "step incomplete (`nilemig status` shows it); fix the data or the step, then run `nilemig up` "
                "again: it resumes only the tenants not done, before applying any later migration."
            )
        lister.execute(f"UPDATE {STEPS_TABLE} SET completed_at = now() WHERE id = %s", (step.id,))


def _pending(lister: psycopg.Connection, step: Step, since: Any) -> Iterator[str]:
    """Tenants the step has not been applied to (nor failed for in this run), in pages: memory stays flat."""
    last = None
    while True:
        after = "" if last is None else "AND t.id > %(last)s"
        rows = lister.execute(
            f"SELECT t.id FROM ({step.selection}) AS t(id) WHERE NOT {_DONE} AND NOT {_FAILED_SINCE} {after} "
            f"ORDER BY t.id LIMIT {PAGE_SIZE}", {"step": step.id, "since": since, "last": last}).fetchall()
        for (tenant,) in rows:
            yield str(tenant)
        if len(rows) < PAGE_SIZE:
            return
        last = rows[-1][0]


@contextmanager
def _connect(database: Database, settings: RunSettings) -> Iterator[psycopg.Connection]:
    import psycopg

    try:
        connection = psycopg.connect(libpq_dsn(database.url), autocommit=True, prepare_threshold=None,
                                     connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=APPLICATION_NAME)
    except psycopg.OperationalError as exc:
        raise connection_error(exc, database) from None
    try:
        connection.execute(_timeouts(settings))
        yield connection
    finally:
        connection.close()


# Tenants' transactions need not wait for their WAL flush: a server crash can only lose a tenant's work
# together with its progress row (one transaction), so that tenant runs again; the synchronous commit that
# marks the step complete flushes every tenant's before it. Skipped where the server refuses the setting.
_NO_FLUSH_WAIT = "SET synchronous_commit = off"


def _timeouts(settings: RunSettings) -> str:
    return (f"SET lock_timeout = '{int(settings.table_lock_timeout_seconds * 1000)}ms'; "
            f"SET statement_timeout = '{int(settings.statement_timeout_seconds * 1000)}ms'")


def _in_tenant(step: Step, tenant: str) -> str:
    """The statements that open a tenant's transaction: its context, and its progress row, which makes
    a second attempt at the same tenant fail (and roll back) instead of applying the work twice."""
    return (f"SET LOCAL nile.tenant_id = '{tenant}'; "
            f"INSERT INTO {STEP_TENANTS_TABLE} (step_id, tenant_id) VALUES ('{step.id}', '{tenant}')")


class _AlreadyDone(Exception):
    pass


def _database_error(exc: BaseException) -> Any:
    return getattr(exc, "orig", None) or exc


def _already_done(exc: BaseException) -> bool:
    diag = getattr(_database_error(exc), "diag", None)
    return getattr(diag, "constraint_name", None) == f"{STEP_TENANTS_TABLE}_pkey"


def _is_transient(exc: BaseException) -> bool:
    import psycopg

    error = _database_error(exc)
    state = getattr(error, "sqlstate", None) or ""
    # A connection lost mid-query carries no SQLSTATE.
    return state in TRANSIENT_SQLSTATES or state.startswith("08") or (
        not state and isinstance(error, psycopg.OperationalError))


def _reason(exc: BaseException) -> str:
    error = _database_error(exc)
    text = getattr(getattr(error, "diag", None), "message_primary", None) or str(error) or type(error).__name__
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


class _SqlSession:
    """A worker's connection for a SQL step: each tenant is one round trip of one transaction."""

    def __init__(self, database: Database, step: Step, settings: RunSettings):
        import psycopg

        self.step = step
        self._context = _connect(database, settings)
        self.connection = self._context.__enter__()
        with suppress(psycopg.Error):  # autocommit: a refused SET leaves no transaction behind
            self.connection.execute(_NO_FLUSH_WAIT)

    def apply(self, tenant: str) -> None:
        try:
            # No parameters: psycopg sends this as one simple query, so several statements make one round trip.
            self.connection.execute(f"BEGIN; {_in_tenant(self.step, tenant)}; {self.step.sql}\n; COMMIT")
        except BaseException:
            self._rollback()
            raise

    def record_failure(self, tenant: str, error: str) -> None:
        with self.connection.transaction():
            self.connection.execute(f"SET LOCAL nile.tenant_id = '{tenant}'")
            self.connection.execute(
                f"INSERT INTO {STEP_FAILURES_TABLE} (step_id, tenant_id, error) VALUES (%s, %s, %s) "
                "ON CONFLICT (step_id, tenant_id) DO UPDATE SET error = EXCLUDED.error, failed_at = now()",
                (self.step.id, tenant, error))

    @property
    def broken(self) -> bool:
        return self.connection.closed or self.connection.broken

    def _rollback(self) -> None:
        import psycopg

        if not self.broken and self.connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.connection.execute("ROLLBACK")

    def close(self) -> None:
        self._context.__exit__(None, None, None)


class _CallableSession:
    """A worker's SQLAlchemy connection for a step given as a Python function."""

    def __init__(self, database: Database, step: Step, settings: RunSettings):
        from sqlalchemy.exc import DBAPIError, OperationalError

        self.step = step
        try:
            self.connection = create_engine(database.url).connect()
        except OperationalError as exc:
            raise connection_error(exc, database) from None
        self.connection.exec_driver_sql(_timeouts(settings))
        self.connection.commit()
        try:
            self.connection.exec_driver_sql(_NO_FLUSH_WAIT)
            self.connection.commit()
        except DBAPIError:
            self.connection.rollback()

    def apply(self, tenant: str) -> None:
        with self.connection.begin():
            self.connection.exec_driver_sql(_in_tenant(self.step, tenant))
            self.step.action(self.connection, uuid.UUID(tenant))

    def record_failure(self, tenant: str, error: str) -> None:
        with self.connection.begin():
            self.connection.exec_driver_sql(f"SET LOCAL nile.tenant_id = '{tenant}'")
            self.connection.execute(_text(
                f"INSERT INTO {STEP_FAILURES_TABLE} (step_id, tenant_id, error) VALUES (:step, :tenant, :error) "
                "ON CONFLICT (step_id, tenant_id) DO UPDATE SET error = EXCLUDED.error, failed_at = now()"),
                {"step": self.step.id, "tenant": tenant, "error": error})

    @property
    def broken(self) -> bool:
        return self.connection.closed or self.connection.invalidated

    def close(self) -> None:
        self.connection.close()


class _Run:
    """N worker threads, each with its own connection, taking tenants from a bounded queue."""

    def __init__(self, database: Database, step: Step, settings: RunSettings):
        self.database, self.step, self.settings = database, step, settings
        self.workers = max(1, settings.tenant_workers)
        self.queue: queue.Queue[str | None] = queue.Queue(maxsize=self.workers * 64)
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.done = 0
        self.failed = 0
        self.errors: list[tuple[str, str]] = []
        self.fatal: BaseException | None = None
        self.threads: list[threading.Thread] = []
        self.next_tick = 0.0

    def _session(self) -> _SqlSession | _CallableSession:
        return (_SqlSession if self.step.sql is not None else _CallableSession)(self.database, self.step,
                                                                                  self.settings)

    def start(self) -> None:
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"nilemig-tenant-{n}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def put(self, tenant: str, tick: Callable[[], None]) -> bool:
        """Hand a tenant to the workers; False when they have stopped."""
        while not self.halt.is_set():
            if time.monotonic() >= self.next_tick:
                self.next_tick = time.monotonic() + TICK_SECONDS
                tick()
            try:
                self.queue.put(tenant, timeout=TICK_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def wait_idle(self, tick: Callable[[], None]) -> None:
        """Until every tenant handed out so far is finished."""
        while self.queue.unfinished_tasks and not self.halt.is_set():
            tick()
            time.sleep(TICK_SECONDS)

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join()

    def _work(self) -> None:
        session = None
        try:
            session = self._session()
            while not self.halt.is_set():
                try:
                    tenant = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:
                    session = self._apply(session, tenant)
                finally:
                    self.queue.task_done()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            with self.lock:
                self.fatal = self.fatal or exc
            self.halt.set()
        finally:
            if session is not None:
                session.close()

    def _apply(self, session: Any, tenant: str) -> Any:
        """Apply one tenant, retrying transient errors with exponential backoff and full jitter."""
        for attempt in range(ATTEMPTS):
            try:
                session.apply(tenant)
            except Exception as exc:  # noqa: BLE001 - sorted below: done already, retried, or recorded
                if _already_done(exc):
                    break
                if not _is_transient(exc) or attempt == ATTEMPTS - 1 or self.halt.is_set():
                    session = self._fail(session, tenant, _reason(exc))
                    return session
                time.sleep(random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt)))
                if session.broken:
                    session.close()
                    session = self._session()
            else:
                break
        with self.lock:
            self.done += 1
        return session

    def _fail(self, session: Any, tenant: str, error: str) -> Any:
        with self.lock:
            self.failed += 1
            if len(self.errors) < ERRORS_SHOWN:
                self.errors.append((tenant, error))
        if session.broken:
            session.close()
            session = self._session()
        session.record_failure(tenant, error)
        return session
