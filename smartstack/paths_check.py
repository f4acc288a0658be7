"""Whether a daemon can write the files it will write: checked before it starts.

A daemon that finds out at its first write logs the same traceback again and again;
checked up front, the operator reads one line naming the key, the directory and why.

Each problem has a kind, because they call for different answers (review s29):

- ``CONFIG``: the path itself is wrong (not a directory, a socket directory nobody makes):
  no write will ever work, whatever happens on the host;
- ``READ_ONLY`` (EROFS): the filesystem's state of this moment (a failing disk the kernel
  remounted read-only, a snapshot being taken): the running daemon survives it like a
  full disk (runtime changes, writes retried), so a start must too;
- ``READ_ONLY_MOUNT`` (EROFS too): a read-only mount of a writable filesystem (a read-only
  bind mount, a container's read-only root, a read-only ``/usr``: smartstack/mountinfo.py),
  the deployment's like a permission: no write will work there until the unit changes;
- ``PERMISSION`` (EACCES): the deployment's (owner, mode, the unit's ``User=``).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from smartstack.logs import event
from smartstack.mountinfo import read_only_mount_of_writable_fs

CONFIG, READ_ONLY, PERMISSION = "config", "read_only", "permission"
READ_ONLY_MOUNT = "read_only_mount"
ERRNO_NAMES = {
    READ_ONLY: errno.errorcode[errno.EROFS],
    READ_ONLY_MOUNT: errno.errorcode[errno.EROFS],
    PERMISSION: errno.errorcode[errno.EACCES],
}


@dataclass(frozen=True)
class PathProblem:
    key: str  # the config key (``haproxy.state_file_path``)
    path: Path  # the file the daemon writes
    reason: str  # why it cannot (names the directory)
    kind: str  # CONFIG, READ_ONLY, READ_ONLY_MOUNT or PERMISSION

    def line(self, config_path: Path) -> str:
        return f"{config_path}: {self.key}: cannot write {self.path}: {self.reason}"


def diagnose(path: Path, create: bool = True) -> tuple[str, str] | None:
    """(why, kind) files cannot be created in ``path``'s directory (None: they can).

    ``create``: the daemon makes missing directories (``mkdir -p``), so the nearest
    existing ancestor is what must be writable.
    """
    directory = path.parent if path.parent != Path("") else Path(".")
    try:  # (an ancestor nobody may search: stat raises EACCES, it is a problem, not a crash)
        if not directory.exists():
            if not create:
                return f"directory {directory} does not exist", CONFIG
            while not directory.exists():
                directory = directory.parent
        if not directory.is_dir():
            return f"{directory} is not a directory", CONFIG
    except OSError as exc:
        kind = PERMISSION if exc.errno in (errno.EACCES, errno.EPERM) else CONFIG
        return f"cannot inspect {directory}: {exc.strerror or exc}", kind
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        # (a missing directory below it cannot be made either: the same verdict)
        point = read_only_mount_of_writable_fs(directory)
        if point is not None:
            return (f"directory {directory} is on a read-only mount ({point}) of a writable "
                    "filesystem", READ_ONLY_MOUNT)  # fmt: skip
        return f"directory {directory} is on a read-only filesystem", READ_ONLY
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable by this user", PERMISSION
    return None


def directory_problem(path: Path, create: bool = True) -> str | None:
    """Why files cannot be created in ``path``'s directory (None: they can)."""
    found = diagnose(path, create)
    return found[0] if found else None


def path_problems(
    paths: dict[str, Path | None], not_created: Iterable[Path] = ()
) -> list[PathProblem]:
    """One problem per key (``haproxy.config_file_path``) whose directory is unusable;
    ``not_created``: files whose missing directory nobody makes (sockets HAProxy opens)."""
    problems = []
    exact = set(not_created)
    for key, path in paths.items():
        if path is None:
            continue
        found = diagnose(path, create=path not in exact)
        if found:
            problems.append(PathProblem(key, path, *found))
    return problems


def writable_problems(
    config_path: Path, paths: dict[str, Path | None], not_created: Iterable[Path] = ()
) -> list[str]:
    """``path_problems`` as error lines."""
    return [problem.line(config_path) for problem in path_problems(paths, not_created)]


def say_unwritable(log: logging.Logger, problems: Iterable[PathProblem], detail: str) -> None:
    """At a start that goes on: one warning per path the daemon will not manage to write
    until the host changes (logging is set up before the preflight at a start)."""
    for problem in problems:
        event(log, "start_path_unwritable", level=logging.WARNING, key=problem.key,
              path=str(problem.path), error=ERRNO_NAMES.get(problem.kind, problem.kind),
              reason=problem.reason, detail=detail)  # fmt: skip
