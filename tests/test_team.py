"""Team and CI conventions: shell completion, `history --json`, NO_COLOR / FORCE_COLOR, the pre-commit
hooks (through `pre-commit try-repo` in a scratch git repository) and the GitHub Action's steps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import new_migration, run_cli, url_string
from lintkit import write_chain

from nilemig.cli.output import colour_settings
from nilemig.commands.init import init

ROOT = Path(__file__).resolve().parents[1]
NILEMIG = str(Path(sys.executable).parent / "nilemig")
NILE001 = '''def upgrade():
    op.create_table("todos", sa.Column("id", sa.Integer, primary_key=True), sa.Column("tenant_id", sa.Uuid))
'''


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_show_completion(tmp_path):
    # As typed at a bash prompt: the shell is told by the process tree (shellingham), whatever ran pytest.
    result = _run("bash", "-c", f"{NILEMIG} --show-completion; exit $?", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_NILEMIG_COMPLETE=complete_bash" in result.stdout


@pytest.mark.parametrize("shell, marker", [("bash", "complete -o"), ("zsh", "#compdef nilemig"),
                                           ("fish", "complete --command nilemig")])
def test_completion_scripts(tmp_path, shell, marker):
    result = _run(NILEMIG, cwd=tmp_path, env={"_NILEMIG_COMPLETE": f"source_{shell}"})
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout


def test_completion_lists_commands(tmp_path):
    result = _run(NILEMIG, cwd=tmp_path, env={"_NILEMIG_COMPLETE": "complete_bash", "COMP_WORDS": "nilemig h",
                                               "COMP_CWORD": "1"})
    assert result.returncode == 0, result.stderr
    assert "history" in result.stdout.split()


def test_history_json(project):
    first = new_migration("create account", "op.create_table('account', sa.Column('id', sa.Integer, primary_key=True))",
                          "op.drop_table('account')")
    assert run_cli("up").exit_code == 0
    new_migration("add name", "op.add_column('account', sa.Column('name', sa.Text))", "op.drop_column('account', 'name')")
    result = run_cli("history", "--json")
    assert result.exit_code == 0, result.output
    migrations = json.loads(result.stdout)["migrations"]
    assert [(m["message"], m["applied"], m["current"]) for m in migrations] == [
        ("add name", False, False), ("create account", True, True)]
    assert migrations[1]["path"].endswith(first.name)


def test_colour_settings_follow_no_color_and_force_color():
    assert colour_settings({}) == {"force_terminal": None, "no_color": False}
    assert colour_settings({"NO_COLOR": "", "FORCE_COLOR": ""}) == {"force_terminal": None, "no_color": False}
    assert colour_settings({"FORCE_COLOR": "1"}) == {"force_terminal": True, "no_color": False}
    assert colour_settings({"NO_COLOR": "1", "FORCE_COLOR": "1"}) == {"force_terminal": True, "no_color": True}


def test_every_command_honours_no_color_and_force_color(project_dir):
    write_chain(project_dir, NILE001)
    for args in (("check",), ("rules", "NILE001"), ("status",)):
        forced = _run(NILEMIG, *args, cwd=project_dir, env={"FORCE_COLOR": "1", "NO_COLOR": "", "DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/db"})
        assert "\x1b[" in forced.stdout + forced.stderr, args
        plain = _run(NILEMIG, *args, cwd=project_dir, env={"FORCE_COLOR": "", "NO_COLOR": "", "DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/db"})
        assert "\x1b[" not in plain.stdout + plain.stderr, args
        no_colour = _run(NILEMIG, *args, cwd=project_dir, env={"FORCE_COLOR": "1", "NO_COLOR": "1", "DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/db"})
        assert "\x1b[31m" not in no_colour.stdout + no_colour.stderr, args
        assert "secret" not in forced.stdout + forced.stderr + no_colour.stderr


# --- pre-commit -------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> tuple[Path, str, Path]:
    """This checkout (uncommitted changes included) as a git repository at a fixed commit, so that
    pre-commit builds nilemig's environment once for every try-repo call; and a pre-commit home."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        pytest.skip("pre-commit is not installed (the test extra installs it)")
    source = tmp_path_factory.mktemp("hooks") / "nilemig"
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    _git("init", "-q", cwd=source)
    _git("add", "-A", cwd=source)
    _git("commit", "-q", "-m", "hooks", cwd=source)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True,
                         check=True).stdout.strip()
    return source, rev, tmp_path_factory.mktemp("pre-commit-home")


def _try_repo(repo: Path, hook_repo: tuple[Path, str, Path], hook: str, *files: str) -> subprocess.CompletedProcess:
    source, rev, home = hook_repo
    selection = ["--files", *files] if files else ["--all-files"]
    return _run(sys.executable, "-m", "pre_commit", "try-repo", str(source), hook, "--ref", rev, *selection,
                cwd=repo, env={"PRE_COMMIT_HOME": str(home), "PRE_COMMIT_COLOR": "never"}, timeout=900)


def _sample_repo(root: Path) -> Path:
    repo = root / "app"
    init(repo)
    _git("init", "-q", cwd=repo)
    write_chain(repo, '''def upgrade():
    op.create_table("account", sa.Column("id", sa.Uuid, primary_key=True))
''')
    _git("add", "-A", cwd=repo)
    return repo


def test_pre_commit_try_repo_fails_on_a_nile_invalid_migration(tmp_path, hook_repo):
    """`language: python`: pre-commit installs nilemig from the hook repository (one build, a minute or two)."""
    repo = _sample_repo(tmp_path)
    write_chain(repo, NILE001)
    _git("add", "-A", cwd=repo)
    failed = _try_repo(repo, hook_repo, "nilemig-check")
    if "An unexpected error has occurred" in failed.stdout + failed.stderr:
        pytest.skip(f"pre-commit could not build nilemig's environment here: {failed.stdout[-800:]}")
    assert failed.returncode == 1 and "Failed" in failed.stdout and "NILE001" in failed.stdout, failed.stdout


def test_pre_commit_language_system(tmp_path, hook_repo):
    """`repo: local`, `language: system` (README): the project's own nilemig, with the same hooks."""
    import yaml

    repo = _sample_repo(tmp_path)
    hooks = [{**hook, "language": "system"} for hook in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())]
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}))
    _git("add", "-A", cwd=repo)

    def run(*args: str) -> subprocess.CompletedProcess:
        return _run(sys.executable, "-m", "pre_commit", "run", *args, cwd=repo, timeout=300,
                    env={"PRE_COMMIT_HOME": str(hook_repo[2]), "PRE_COMMIT_COLOR": "never",
                         "PATH": f"{Path(NILEMIG).parent}{os.pathsep}{os.environ['PATH']}"})

    passed = run("--all-files")
    assert passed.returncode == 0 and "nilemig check" in passed.stdout and "Passed" in passed.stdout, passed.stdout
    assert "nilemig verify" not in passed.stdout, "verify is for the manual stage"

    write_chain(repo, NILE001)
    _git("add", "-A", cwd=repo)
    failed = run("--all-files")
    assert failed.returncode == 1 and "NILE001" in failed.stdout, failed.stdout

    (repo / "README.md").write_text("hello\n")
    _git("add", "README.md", cwd=repo)
    skipped = run("nilemig-check", "--files", "README.md")
    assert skipped.returncode == 0 and "no files to check" in skipped.stdout.lower(), skipped.stdout


def test_pre_commit_hooks_file():
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"nilemig-check", "nilemig-verify"}
    assert hooks["nilemig-verify"]["stages"] == ["manual"]
    for hook in hooks.values():
        assert hook["pass_filenames"] is False and hook["language"] == "python"
    import re

    pattern = re.compile(hooks["nilemig-check"]["files"])
    assert pattern.search("alembic/versions/0001_x.py") and pattern.search("backend/models.py")
    assert not pattern.search("src/app/views.py")


# --- GitHub Action ----------------------------------------------------------------------------------


def test_the_action_runs_check_verify_and_status(example, database_url, pg_server):
    """Each `run:` step of action.yml, as GitHub would run it in the example project."""
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = {s["name"]: s for s in action["runs"]["steps"]}
    commands = [steps["nilemig check"], steps["nilemig verify"], steps["nilemig status --check"]]
    env = {"CI": "true", "NILEMIG_CHECK_ARGS": "", "DATABASE_URL": url_string(database_url),
           "PATH": f"{Path(NILEMIG).parent}{os.pathsep}{os.environ['PATH']}"}
    assert run_cli("autogen", "create todos").exit_code == 0
    for step in commands:
        run = step["run"].replace("nilemig verify", f"nilemig verify --scratch-url '{url_string(pg_server.admin_url)}'")
        result = _run("bash", "-c", run, cwd=example, env=env, timeout=300)
        assert result.returncode == (1 if step is commands[2] else 0), (run, result.stdout, result.stderr)
    assert "pending" in result.stdout.lower() or "not applied" in (result.stdout + result.stderr).lower()
    assert run_cli("up").exit_code == 0
    assert _run("bash", "-c", commands[2]["run"], cwd=example, env=env).returncode == 0
