"""Whether a daemon can write the files it will write: checked before it starts.

A daemon that finds out at its first write logs the same traceback again and again;
checked up front, the operator reads one line naming the key, the directory and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def directory_problem(path: Path, create: bool = True) -> str | None:
    """Why files cannot be created in ``path``'s directory (None: they can).

    ``create``: the daemon makes missing directories (``mkdir -p``), so the nearest
    existing ancestor is what must be writable.
    """
    directory = path.parent if path.parent != Path("") else Path(".")
    try:  # (an ancestor nobody may search: stat raises EACCES, it is a problem, not a crash)
        if not directory.exists():
            if not create:
                return f"directory {directory} does not exist"
            while not directory.exists():
                directory = directory.parent
        if not directory.is_dir():
            return f"{directory} is not a directory"
    except OSError as exc:
        return f"cannot inspect {directory}: {exc.strerror or exc}"
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return f"directory {directory} is on a read-only filesystem"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user"
    return None


def writable_problems(
    config_path: Path, paths: dict[str, Path | None], not_created: Iterable[Path] = ()
) -> list[str]:
    """One error line per key (``haproxy.config_file_path``) whose directory is unusable;
    ``not_created``: files whose missing directory nobody makes (sockets HAProxy opens)."""
    lines = []
    exact = set(not_created)
    for key, path in paths.items():
        if path is None:
            continue
        problem = directory_problem(path, create=path not in exact)
        if problem:
            lines.append(f"{config_path}: {key}: cannot write {path}: {problem}")
    return lines
