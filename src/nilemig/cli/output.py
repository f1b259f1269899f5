"""Printing: rich consoles made on first use (stdout is data, stderr is for people), and findings."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class _LazyConsole:
    """A rich Console made on first use: importing rich costs `nilemig --help` a fifth of its time."""

    def __init__(self, stderr: bool):
        self._stderr = stderr
        self._console = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, highlight=False, soft_wrap=True, emoji=False,
                                    **colour_settings())
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def colour_settings(environ: dict[str, str] | None = None) -> dict[str, bool | None]:
    """NO_COLOR (no-color.org) and FORCE_COLOR (force-color.org), read the same way whatever rich's version.

    Each counts when set to anything but the empty string; FORCE_COLOR styles output that goes to a
    pipe (CI logs), NO_COLOR drops colours but keeps bold, and wins when both are set.
    """
    environ = os.environ if environ is None else environ
    return {"force_terminal": True if environ.get("FORCE_COLOR") else None,
            "no_color": bool(environ.get("NO_COLOR"))}


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


out = _LazyConsole(stderr=False)
err = _LazyConsole(stderr=True)


class _Progress:
    """A step counter for long commands: `start(total)`, then `step(name)` once per step."""

    def __init__(self, progress: Any, task: Any):
        self._progress, self._task = progress, task

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total)

    def step(self, name: str) -> None:
        self._progress.update(self._task, description=escape(name))
        self._progress.advance(self._task)


@contextmanager
def progress_bar(description: str, disable: bool = False) -> Iterator[_Progress]:
    """A progress bar on stderr that disappears when done (nothing when `disable`)."""
    from rich.progress import Progress

    with Progress(console=err.console, transient=True, disable=disable) as progress:
        yield _Progress(progress, progress.add_task(description, total=None))


class _StepBar:
    """A for_each_tenant step's bar on stderr (tenants.Progress): done/total, rate, ETA, failures."""

    def start(self, title: str, total: int, done: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("tenants, {task.fields[rate]}/s, ETA"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[failed]}"), console=err.console)
        self._progress.start()
        self._task = self._progress.add_task(escape(title), total=total, completed=done, rate="-", failed="")

    def update(self, done: int, failed: int) -> None:
        speed = self._progress.tasks[0].speed
        self._progress.update(self._task, completed=done, rate=f"{speed:.0f}" if speed else "-",
                              failed=f"[red]{failed} failed[/]" if failed else "")

    def finish(self, done: int, failed: int) -> None:
        self.update(done, failed)
        self._progress.stop()


def step_progress() -> _StepBar:
    return _StepBar()


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def print_findings(findings, output_format: str, stderr: bool = False) -> None:
    from nilemig.core import display_path

    console = err if stderr else out
    if output_format == "json":
        console.print_json(json.dumps({"findings": [f.to_json() for f in findings]}))
        return
    if output_format == "github":
        from nilemig.commands.check import github_annotations

        sys.stdout.write(github_annotations(findings))
        return
    shown = None
    for f in findings:
        if f.path != shown:
            shown = f.path
            console.print(f"[bold]{escape(display_path(f.path))}[/]")
        colour = "red" if f.severity == "error" else "yellow"
        console.print(f"  {f.line:>4}  [{colour}]{f.severity:<7}[/] [bold]{f.code}[/]  {escape(f.message)}")


