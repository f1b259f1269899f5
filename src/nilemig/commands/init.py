"""`nilemig init`: lay out a plain Alembic project wired for Nile. Never overwrites a file.

`nilemig init --adopt` switches an existing Alembic project to nilemig's env.py, keeping the
old one as env.py.orig and carrying over what it can find in it.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nilemig.core import ENV_PY_MARKER
from nilemig.errors import NilemigError

GITIGNORE_LINES = (".env", ".nilemig/")


@dataclass
class InitResult:
    root: Path
    created: list[Path] = field(default_factory=list)
    existing: list[Path] = field(default_factory=list)
    gitignore_added: list[str] = field(default_factory=list)
    foreign_env_py: bool = False  # an env.py that does not call nilemig was already there


def template_files(name: str) -> dict[str, str]:
    """Relative path -> text of every file under templates/<name>."""
    base = resources.files("nilemig").joinpath("templates", name)
    found: dict[str, str] = {}

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.name == "__pycache__":
                continue
            rel = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, rel + "/")
            else:
                found[rel] = child.read_text(encoding="utf-8")

    walk(base, "")
    return found


def init(root: Path, example: bool = False) -> InitResult:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    files = template_files("project")
    if example:
        files.update(template_files("example"))
    result = InitResult(root)
    (root / "alembic" / "versions").mkdir(parents=True, exist_ok=True)
    for rel, text in sorted(files.items()):
        target = root / rel
        if target.exists():
            result.existing.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        result.created.append(target)
    result.gitignore_added = _ensure_gitignore(root / ".gitignore")
    env_py = root / "alembic" / "env.py"
    result.foreign_env_py = env_py in result.existing and ENV_PY_MARKER not in env_py.read_text(encoding="utf-8")
    return result


def _ensure_gitignore(path: Path) -> list[str]:
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    missing = [line for line in GITIGNORE_LINES if line not in existing.splitlines()]
    if missing:
        with path.open("a", encoding="utf-8") as out:
            if existing and not existing.endswith("\n"):
                out.write("\n")
            out.write("# nilemig: secrets and the local development database\n")
            out.write("".join(f"{line}\n" for line in missing))
    return missing


# Modules a stock env.py imports for its own plumbing, which nilemig's env.py does itself: their imports
# are carried over only when carried code uses a name they bind. Any other import is the project's
# (its models, often imported only to register them) and is always carried over.
_PLUMBING_MODULES = {"alembic", "logging", "sqlalchemy", "os", "sys", "dotenv", "pathlib", "typing", "__future__",
                     "asyncio"}
# context.configure options nilemig's env.py sets itself, or that only its offline/online plumbing needs.
_NILEMIG_OPTIONS = {"url", "connection", "target_metadata", "literal_binds", "dialect_opts", "dialect_name",
                    "as_sql", "transaction_per_migration", "on_version_apply"}
_REPLACED = (
    (re.compile(r"load_dotenv\("), "load_dotenv(): nilemig reads DATABASE_URL from the environment and .env itself"),
    (re.compile(r"sqlalchemy\.url"), ("setting sqlalchemy.url: nilemig chooses the database (--database-url, "
                                      "DATABASE_URL, .env, else the local development database)")),
    (re.compile(r"fileConfig\("), "logging set-up: nilemig's env.py reads alembic.ini's loggers for plain alembic"),
)
_MIRRORED_TENANTS = re.compile(r"""__tablename__\s*=\s*["']tenants["']|Table\(\s*["']tenants["']""")


@dataclass
class Adopted:
    env_py: Path
    original: Path  # the project's env.py, kept as it was
    carried: list[str] = field(default_factory=list)  # what moved into nilemig's env.py
    replaced: list[str] = field(default_factory=list)  # what nilemig's env.py now does instead
    not_carried: list[str] = field(default_factory=list)  # what could not move, and why
    tenant_mirrors: list[str] = field(default_factory=list)  # "file:line" of a hand-made copy of Nile's tenants
    created: list[Path] = field(default_factory=list)
    gitignore_added: list[str] = field(default_factory=list)


def adopt(root: Path) -> Adopted:
    """Write nilemig's env.py in the Alembic project at `root`, keeping the old one as env.py.orig.

    alembic.ini is left alone (script_location, version_locations, file_template and the rest).
    """
    from nilemig.config import INI_NAME, Project
    from nilemig.core import display_path, foreign_env_py

    root = root.resolve()
    if not (root / INI_NAME).is_file():
        raise NilemigError(f"No {INI_NAME} in {root}: --adopt switches an existing Alembic project to nilemig. "
                           "Run `nilemig init` (without --adopt) to create a new project.")
    env_py = foreign_env_py(Project(root))
    if env_py is None:
        raise NilemigError("This project's env.py is nilemig's already: nothing to adopt.")
    original = env_py.with_name("env.py.orig")
    if original.exists():
        raise NilemigError(f"{display_path(original)} exists already, and --adopt keeps the current env.py there: "
                           "move it away (it may be the env.py of an earlier adoption), then run again.")
    if not env_py.is_file():
        raise NilemigError(f"There is no {display_path(env_py)} to adopt. Run `nilemig init` to write nilemig's.")
    source = env_py.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source, filename=str(env_py))
    except SyntaxError as exc:
        raise NilemigError(f"{display_path(env_py)} has a syntax error at line {exc.lineno}: {exc.msg}. "
                           "Fix it, then run again; nothing was changed.") from None
    result = Adopted(env_py, original)
    new_source = _nilemig_env_py(source, tree, result)
    env_py.rename(original)
    env_py.write_text(new_source, encoding="utf-8")
    result.tenant_mirrors = _tenant_mirrors(root, tree)
    example = root / ".env.example"
    if not example.exists():
        example.write_text(template_files("project")[".env.example"], encoding="utf-8")
        result.created.append(example)
    result.gitignore_added = _ensure_gitignore(root / ".gitignore")
    return result


def _defined(statement: ast.stmt) -> set[str]:
    if isinstance(statement, ast.Import):
        return {alias.asname or alias.name.split(".")[0] for alias in statement.names}
    if isinstance(statement, ast.ImportFrom):
        return {alias.asname or alias.name for alias in statement.names}
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {statement.name}
    if isinstance(statement, (ast.Assign, ast.AnnAssign)):
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _module(statement: ast.stmt) -> str | None:
    if isinstance(statement, ast.ImportFrom):
        return statement.module if not statement.level else None
    if isinstance(statement, ast.Import):
        return statement.names[0].name
    return None


def _is_plumbing(statement: ast.stmt) -> bool:
    module = _module(statement)
    return module is not None and module.split(".")[0] in _PLUMBING_MODULES


def _configure_calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "configure" and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "context"]


def _nilemig_env_py(source: str, tree: ast.Module, result: Adopted) -> str:
    """nilemig's env.py, with the old one's model imports, target_metadata and extra configure options."""
    def segment(node: ast.AST) -> str:
        return ast.get_source_segment(source, node) or ""

    top = [s for s in tree.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    options: dict[str, str] = {}
    for call in _configure_calls(tree):
        for keyword in call.keywords:
            if keyword.arg is None:
                result.not_carried.append(f"line {call.lineno}: **{segment(keyword.value)} in context.configure "
                                          "(nilemig cannot tell which options it holds)")
            elif keyword.arg not in _NILEMIG_OPTIONS:
                value = segment(keyword.value)
                if options.setdefault(keyword.arg, value) != value:
                    result.not_carried.append(f"{keyword.arg}: set to {options[keyword.arg]} and to {value} in "
                                              "different context.configure calls; set it in env.py yourself")
    conflicting = {line.split(":")[0] for line in result.not_carried}
    options = {name: value for name, value in options.items() if name not in conflicting}
    option_nodes = [kw.value for call in _configure_calls(tree) for kw in call.keywords if kw.arg in options]
    # Code that can move: what target_metadata and the carried options need, project imports, sys.path tweaks.
    metadata = next((s for s in reversed(top) if "target_metadata" in _defined(s) and isinstance(s, ast.Assign)),
                    None)
    needed = set().union(*(_used(node) for node in option_nodes)) | ({"target_metadata"} if metadata else set())
    carried = {id(s) for s in top if (isinstance(s, (ast.Import, ast.ImportFrom)) and not _is_plumbing(s))
               or (isinstance(s, ast.Expr) and "sys.path" in segment(s))}
    needed |= set().union(set(), *(_used(s) for s in top if id(s) in carried))
    definers = [s for s in top if _defined(s) and not isinstance(s, ast.If)]
    changed = True
    while changed:
        changed = False
        for statement in definers:
            if id(statement) not in carried and _defined(statement) & needed - {"context"}:
                carried.add(id(statement))
                needed |= _used(statement)
                changed = True
    kept = [s for s in top if id(s) in carried and not _is_alembic_context(s)]
    # A blank line after each run of imports, as a person would write it.
    body = [segment(s) + ("\n" if isinstance(s, (ast.Import, ast.ImportFrom)) and not isinstance(after, (
        ast.Import, ast.ImportFrom)) else "") for s, after in zip(kept, [*kept[1:], None])]
    for statement in top:
        if id(statement) in carried:
            continue
        text = segment(statement)
        reason = next((why for pattern, why in _REPLACED if pattern.search(text)), None)
        if reason is not None:
            if reason not in result.replaced:
                result.replaced.append(reason)
        elif not _is_stock_plumbing(statement):
            first = text.splitlines()[0]
            result.not_carried.append(f"line {statement.lineno}: `{first}`" + (" ..." if "\n" in text else ""))
    if metadata is None:
        body.append("target_metadata = None")
        result.not_carried.append("target_metadata: none found; set it to your models' MetaData for autogenerate")
    result.carried += [segment(s).splitlines()[0] for s in kept]
    result.carried += [f"context.configure option {name}={value}" for name, value in options.items()]
    arguments = "".join(f", {name}={value}" for name, value in options.items())
    return _ADOPTED_ENV_PY.format(body="\n".join(body).rstrip("\n"), arguments=arguments)


def _is_alembic_context(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.ImportFrom) and statement.module == "alembic" and \
        {a.name for a in statement.names} == {"context"}


def _is_stock_plumbing(statement: ast.stmt) -> bool:
    """Parts of Alembic's stock env.py that nilemig's run_migrations replaces as a whole."""
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return statement.name.startswith("run_") or statement.name.startswith("do_run")
    if isinstance(statement, ast.If):
        return "is_offline_mode" in ast.unparse(statement.test)
    if isinstance(statement, ast.Assign):
        return ast.unparse(statement.value) == "context.config"
    return False


def _tenant_mirrors(root: Path, tree: ast.Module) -> list[str]:
    """Where the project's models define a `tenants` table of their own instead of using define_tenants."""
    from nilemig.core import display_path

    candidates = {root / "models.py"}
    for statement in tree.body:
        module = _module(statement)
        if module and not _is_plumbing(statement):
            relative = Path(*module.split("."))
            candidates |= {root / relative.with_suffix(".py"), root / relative / "__init__.py"}
    found = []
    for path in sorted(p for p in candidates if p.is_file()):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if _MIRRORED_TENANTS.search(line):
                found.append(f"{display_path(path)}:{number}")
    return found


_ADOPTED_ENV_PY = '''"""Alembic environment, written by `nilemig init --adopt`; the previous one is env.py.orig beside it.

The Nile-specific work lives in the nilemig package, so upgrading nilemig fixes
every project: reading DATABASE_URL (environment, then .env), making it a
psycopg 3 URL, one transaction per migration, the migration lock and ledger, and
keeping autogenerate away from Nile's built-in tables. Plain `alembic` commands
run through here too.
"""

from alembic import context

from nilemig.alembic_env import run_migrations

{body}

run_migrations(context, target_metadata=target_metadata{arguments})
'''
