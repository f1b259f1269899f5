"""`nilemig autogen` and `nilemig diff`: Alembic autogenerate with Nile's built-ins left alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nilemig.core import (
    alembic_chatter_silenced,
    alembic_config,
    configure_formatter,
    explain_errors,
)
from nilemig.errors import NilemigError

if TYPE_CHECKING:
    from alembic.config import Config

    from nilemig.config import Database, Project

NOT_UP_TO_DATE = "Target database is not up to date"


@dataclass
class Generated:
    path: Path | None
    destructive: list[tuple[int, str]]
    findings: list = field(default_factory=list)  # nilemig check's findings on the new file


@dataclass
class Difference:
    operation: str
    table: str | None
    code: str
    destructive: str | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextmanager
def _autogenerate_errors(project: Project) -> Iterator[None]:
    try:
        with explain_errors(project), alembic_chatter_silenced():
            yield
    except NilemigError as exc:
        if NOT_UP_TO_DATE not in exc.message:
            raise
        raise NilemigError(
            "The database has migrations that are not applied yet, and autogenerate compares your models "
            "with a database at head. Run `nilemig up` first (or `nilemig status` to see what is pending)."
        ) from None


def _autogenerate(project: Project, config: Config, message: str) -> Any:
    from alembic import command

    config.cmd_opts.autogenerate = True
    with _autogenerate_errors(project):
        return command.revision(config, message=message, autogenerate=True)


def _compare(project: Project, config: Config) -> list[Any]:
    """Autogenerate's operations (UpgradeOps), writing no file, whatever the project's env.py is.

    nilemig's env.py hands them over through CAPTURE_KEY; any other env.py leaves them in
    the revision context (as `alembic check` reads them).
    """
    from alembic.autogenerate import RevisionContext
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    from nilemig.keys import CAPTURE_KEY

    captured: list[Any] = []
    config.attributes[CAPTURE_KEY] = captured
    config.cmd_opts.autogenerate = True
    with _autogenerate_errors(project):
        scripts = ScriptDirectory.from_config(config)
        revision_context = RevisionContext(config, scripts, {
            "message": None, "autogenerate": True, "sql": False, "head": "head", "splice": False,
            "branch_label": None, "version_path": None, "rev_id": None, "depends_on": None})

        def compare(rev: Any, context: Any) -> list[Any]:
            revision_context.run_autogenerate(rev, context)
            return []

        with EnvironmentContext(config, scripts, fn=compare, as_sql=False,
                                template_args=revision_context.template_args, revision_context=revision_context):
            scripts.run_env()
    return [*captured, *(ops for script in revision_context.generated_revisions for ops in script.upgrade_ops_list)]


def autogen(project: Project, database: Database, message: str, check: bool = True) -> Generated:
    """Write a migration for what differs between models.py and the database; None when nothing does."""
    from nilemig.autogen import unacknowledged_markers

    config = alembic_config(project, database)
    configure_formatter(config)
    script = _autogenerate(project, config, message)
    if not script:
        return Generated(None, [])
    from nilemig.lint.engine import check as run_check

    path = Path(script.path)
    findings = run_check(project, only={path}).findings if check else []
    return Generated(path, unacknowledged_markers(path), findings)


def diff(project: Project, database: Database) -> list[Difference]:
    """What autogenerate would emit, one entry per operation; writes nothing."""
    from alembic.operations import ops

    found = []
    for upgrade in _compare(project, alembic_config(project, database)):
        for op in upgrade.ops:
            if isinstance(op, ops.ModifyTableOps):
                found.extend(_difference(ops.ModifyTableOps(op.table_name, [inner], schema=op.schema), inner)
                             for inner in op.ops)
            else:
                found.append(_difference(op, op))
    return found


def _difference(renderable: Any, op: Any) -> Difference:
    from alembic.autogenerate import render_python_code
    from alembic.operations import ops

    from nilemig.autogen import destructive_reason

    lines = render_python_code(ops.UpgradeOps([renderable])).splitlines()
    code = "\n".join(line.strip() for line in lines if line.strip() and not line.strip().startswith("# ###"))
    name = code.split("(", 1)[0].removeprefix("op.")
    return Difference(name, getattr(op, "table_name", None), code, destructive_reason(op))
