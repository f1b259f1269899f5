"""The `nilemig` command line: parses arguments and prints; the work lives in `nilemig.commands`.

`app` holds the Typer apps and shared error handling; each module beside it registers
one family of commands, the way `nilemig.commands` is split.
"""

from __future__ import annotations

from typing import Any

from nilemig.cli import authoring, checking, local, migrating  # noqa: F401 - registers the commands
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
    app()
