"""Shared by the bench scripts: time a command the way a user runs it, in a subprocess."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(cmd: list[str], cwd: Path, env: dict[str, str], repeat: int,
                   before: Callable[[], None] | None = None, ok_codes: tuple[int, ...] = (0,)) -> float:
    """Median wall time of `repeat` runs; `before` runs untimed ahead of each one."""
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples.append(time.perf_counter() - start)
        if done.returncode not in ok_codes:
            raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{done.stderr}")
    return statistics.median(samples)
