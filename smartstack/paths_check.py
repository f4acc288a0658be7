"""Whether a daemon can write the files it will write: checked before it starts.

A daemon that finds out at its first write logs the same traceback again and again;
checked up front, the operator reads one line naming the key, the directory and why.
"""

from __future__ import annotations

import os
from pathlib import Path


def directory_problem(path: Path) -> str | None:
    """Why files cannot be created in ``path``'s directory (None: they can)."""
    directory = path.parent if path.parent != Path("") else Path(".")
    if not directory.exists():
        return f"directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return f"directory {directory} is on a read-only filesystem"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user"
    return None


def writable_problems(config_path: Path, paths: dict[str, Path | None]) -> list[str]:
    """One error line per key (``haproxy.config_file_path``) whose directory is unusable."""
    lines = []
    for key, path in paths.items():
        if path is None:
            continue
        problem = directory_problem(path)
        if problem:
            lines.append(f"{config_path}: {key}: cannot write {path}: {problem}")
    return lines
