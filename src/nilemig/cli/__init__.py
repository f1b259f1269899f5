"""The `nilemig` command line: parses arguments and prints; the work lives in `nilemig.commands`.

`app` holds the Typer apps and shared error handling; each module beside it registers
one family of commands, the way `nilemig.commands` is split.
"""

from __future__ import annotations

import sys
from typing import Any

from nilemig.cli import authoring, checking, local, migrating, revisions, squash, steps  # noqa: F401 - registers the commands
from nilemig.cli.app import app

__all__ = ["app", "main"]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    import signal

    # SIGTERM (a CI job cancelled, a container stopped) rolls back like Ctrl-C does; and so does SIGINT when
    # nilemig starts with it ignored (a background job of a shell script), which Python then leaves ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        app()
    except SystemExit as stop:
        _exit_now(stop.code)
    _exit_now(0)


def _exit_now(code: Any) -> None:
    """Exit without the interpreter's teardown: freeing every object of SQLAlchemy and Alembic one by one costs
    0.15-0.2 s per command (bench/startup_and_up.py), for a process about to end anyway. Connections are closed
    by the commands themselves; atexit handlers (logging, temporary files) still run and output is flushed."""
    import atexit
    import os

    if code is not None and not isinstance(code, int):  # sys.exit("message"), as Python itself treats it
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`nilemig history | head`): nothing more can be said
            pass
    os._exit(code or 0)
