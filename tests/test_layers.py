"""The package's layers point down (import-linter contracts in pyproject.toml), and cover every module."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "nilemig"


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layered,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layered["layers"] for name in layer.split("|")]


def test_import_contracts_are_kept(monkeypatch):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml")) == 0


def test_every_module_belongs_to_a_layer():
    layers = _layers()
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:
            continue  # files copied into users' projects, not modules of the package
        module = ".".join(("nilemig", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        if module == "nilemig":
            continue
        assert any(module == layer or module.startswith(f"{layer}.") for layer in layers), (
            f"{module} is in no layer of pyproject.toml's import-linter contract")
