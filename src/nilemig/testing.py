"""Helpers for a project's own test suite, and nilemig's pytest plugin.

    # tests/test_migrations.py
    from nilemig.testing import assert_migrations_verify

    def test_migrations_verify():
        assert_migrations_verify("path/to/project")   # or scratch_url="postgresql://..."

Installing nilemig registers the plugin (entry point `pytest11`), which gives every test suite two
fixtures:

- `nile_database`: the SQLAlchemy URL of a fresh database with Nile's built-ins and strictness,
  dropped after the test. It is made on the server of `NILEMIG_TEST_DATABASE_URL` when that is set
  (its user must be allowed to CREATE DATABASE), else on the project's local development database
  server (the `local` extra). The project is the pytest rootdir, or the `nilemig_project` ini option.
- `alembic_engine`: an engine on `nile_database`, for pytest-alembic's built-in tests.

A conftest.py fixture of the same name overrides either, as with any plugin.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nilemig.config import find_project

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine

TEST_DATABASE_VAR = "NILEMIG_TEST_DATABASE_URL"
PROJECT_INI = "nilemig_project"


def assert_migrations_verify(project_dir: str | Path = ".", scratch_url: str | None = None) -> None:
    """Run `nilemig verify` on the project; fail the test with every problem it finds."""
    from nilemig.commands.verify import verify

    result = verify(find_project(Path(project_dir)), scratch_url)
    if not result.ok:
        lines = [f"{f.kind} {f.revision or ''} {f.file or ''}: {f.message}" + "".join(f"\n    {d}" for d in f.details)
                 for f in result.failures]
        raise AssertionError("nilemig verify failed:\n" + "\n".join(lines))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(PROJECT_INI, "The nilemig project whose local database server nile_database uses, relative "
                  "to the rootdir (default: the rootdir or the nearest directory above it with an alembic.ini).",
                  default=".")


def pytest_configure(config: pytest.Config) -> None:
    # Registered now, after every entry-point plugin has loaded, so that these fixtures take
    # precedence over pytest-alembic's default `alembic_engine` (an in-memory SQLite database),
    # whatever order the plugins were installed in. A conftest.py still overrides them.
    config.pluginmanager.register(NileFixtures(), "nilemig-fixtures")


class NileFixtures:
    """The plugin's fixtures (see the module's docstring)."""

    @pytest.fixture
    def nile_database(self, request: pytest.FixtureRequest) -> Iterator[URL]:
        from nilemig.commands.verify import scratch_database
        from nilemig.errors import NilemigError

        server = os.environ.get(TEST_DATABASE_VAR) or None
        try:
            project = None if server else find_project(request.config.rootpath / request.config.getini(PROJECT_INI))
            with scratch_database(project, server, source=TEST_DATABASE_VAR, prefix="nilemig_test") as database:
                yield database.url
        except NilemigError as exc:
            pytest.fail(f"nile_database: {exc}", pytrace=False)

    @pytest.fixture
    def alembic_engine(self, nile_database: URL) -> Iterator[Engine]:
        from nilemig.database import create_engine

        engine = create_engine(nile_database)
        try:
            yield engine
        finally:
            engine.dispose()
