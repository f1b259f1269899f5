"""Shared by the bench scripts: time commands the way a user runs them, in subprocesses.

The commands being compared run in rotation (A, B, C, A, B, C, ...) rather than one after
the other, so that a slow spell of the machine (disk, the other core) hits them alike.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

Command = tuple[list[str], Path]


def compiled_like_an_install() -> None:
    """Byte-compile nilemig's modules, as pip does when it installs a wheel (Alembic's and SQLAlchemy's were).

    From an editable checkout under PYTHONDONTWRITEBYTECODE=1 (set on the development machine and in CI),
    Python would compile every nilemig module from source in every run, ~0.1 s that no installed nilemig pays.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("nilemig")
    for folder in spec.submodule_search_locations or []:
        compileall.compile_dir(folder, quiet=1)


def medians(commands: dict[str, Command], env: dict[str, str], repeat: int,
            before: Callable[[], None] | None = None, ok_codes: tuple[int, ...] = (0,)) -> dict[str, float]:
    """Median wall time of each command over `repeat` rotations; `before` runs untimed ahead of each run."""
    return {name: statistics.median(times) for name, times in timed(commands, env, repeat, before, ok_codes).items()}


def timed(commands: dict[str, Command], env: dict[str, str], repeat: int,
          before: Callable[[], None] | None = None, ok_codes: tuple[int, ...] = (0,)) -> dict[str, list[float]]:
    """Wall times of each command, one per rotation, in rotation order (so the i-th times ran side by side)."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (cmd, cwd) in commands.items():
            if before is not None:
                before()
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)
            samples[name].append(time.perf_counter() - start)
            if done.returncode not in ok_codes:
                raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr}")
    return samples
