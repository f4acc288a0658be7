"""An exec check whose program cannot be started: a check that cannot run says nothing about
the service.

A typo in the command (``/usr/local/bin/chek-disk``), pushed to a fleet by SIGHUP, failed
every instance's check and withdrew them all within 2 s (review s32). Such a check now gives
no verdict (``check_no_verdict``, nerve/service.py): the registration stays as it is, a
fresh service never registers. The load (``nerve -k``, the start, SIGHUP) warns about it,
never refuses: the program may be installed after the config, and nerve's PATH may differ
from the shell's that ran ``-k``.

What counts as "cannot be started", judged from the config and the file system alone:

- a list: its program (an absolute path that does not exist, is a directory or not
  executable; a bare name not on PATH). At run time the spawn itself tells
  (FileNotFoundError, PermissionError, NotADirectoryError: ``NOT_STARTED``);
- a string (run by ``/bin/sh -c``): only a first word that is a plain absolute path, and only
  when the shell said so (exit status 127 "not found" or 126 "Permission denied"). A bare
  first word is not judged: a builtin (``cd``, ``test``) is on no PATH, and a 127 may come
  from a command further on. Anything with shell syntax in the first word (``$``, ``=``,
  quotes, redirections, globs) is not parsed: round 31 refused valid shell that way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Raised by the spawn of a list command whose program is missing or not executable.
NOT_STARTED = (FileNotFoundError, PermissionError, NotADirectoryError)
# /bin/sh's exit status when it could not run a command: 127 not found, 126 not executable.
SHELL_NOT_RUN = frozenset({126, 127})
# A first word with any of these is left alone (variables, assignments, quoting, globs,
# redirections, subshells, ...): only a plain path is looked up.
SHELL_SYNTAX = frozenset("$=\"'`\\;&|<>()[]{}*?~#!%")


def shell_program(command: str) -> str | None:
    """The first word of a shell string when it is a plain absolute path, else None."""
    words = command.split(None, 1)
    if not words:
        return None
    first = words[0]
    if not first.startswith("/") or SHELL_SYNTAX.intersection(first):
        return None
    return first


def path_problem(path: str) -> str | None:
    """Why the file at an absolute ``path`` cannot be executed (None: it can)."""
    file = Path(path)
    try:
        if not file.exists():
            return "no such file"
        if file.is_dir():
            return "a directory, not a program"
    except OSError as exc:  # e.g. a component of the path is a file (ENOTDIR)
        return exc.strerror or type(exc).__name__
    if not os.access(file, os.X_OK):
        return "not executable by nerve's user"
    return None


def program_problem(command: str | list[str], path_env: str | None = None) -> str | None:
    """``<program>: <why>`` when the command's program cannot be started (see the module's
    docstring for what is judged), else None. ``path_env``: the PATH a bare name is looked
    up in (default: this process's, which an exec check inherits)."""
    if isinstance(command, str):
        program = shell_program(command)
        if program is None:
            return None
    else:
        if not command or not command[0]:
            return None
        program = command[0]
        if "/" not in program:  # a bare name: looked up in PATH, as the spawn does
            if shutil.which(program, path=path_env) is None:
                where = path_env if path_env is not None else os.environ.get("PATH", "")
                return f"{program}: not found on PATH ({where})"
            return None
        if not program.startswith("/"):
            return None  # relative to nerve's working directory: not judged here
    why = path_problem(program)
    return f"{program}: {why}" if why else None


def exec_warnings(path: Path, where: str, commands: list[str | list[str] | None]) -> list[str]:
    """Load warnings for one service block's checks (``where``: ``services.web``);
    ``commands``: each check's command (None for a check of another type)."""
    lines = []
    for n, command in enumerate(commands):
        problem = program_problem(command) if command else None
        if problem:
            lines.append(
                f"{path}: {where}.checks[{n}].command: program {problem}: while it cannot be "
                "started the check gives no verdict (the registration stays as it is)"
            )
    return lines
