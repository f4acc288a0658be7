"""Run commands at once, each writing to its own log file (the bench and faults smokes)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_at_once(
    commands: list[list[str]], logs: list[Path], cwd: Path, timeout: float
) -> list[int]:
    """Start every command, wait for all (`timeout` s each) and return their exit codes;
    one still running at the end (a timeout) is killed."""
    runs = []
    for command, log in zip(commands, logs, strict=True):
        with log.open("w") as out:  # (a file, not a pipe: neither can block on a full one)
            runs.append(subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT))
    try:
        return [run.wait(timeout=timeout) for run in runs]
    finally:
        for run in runs:
            run.kill()  # (only if still running: a timeout)
