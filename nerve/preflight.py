"""What ``nerve -k`` checks beyond the file's schema, on this host: the files nerve writes
(``heartbeat_path``, the maintenance flags in ``state_dir``) can be created.

nerve keeps registering when they cannot (a heartbeat or a flag is worth less than the
registrations), so at start a problem is a warning (``start_path_unwritable``) and nerve
goes on. With ``-k`` (the unit's ExecStartPre) a ``state_dir`` problem is a note too, and so
is a read-only filesystem under ``heartbeat_path``: an error there kept the unit from
starting, 0 registrations until the disk was writable again (review s29); a wrong
``heartbeat_path`` (its directory missing or not a directory, or not writable by this user)
stays an error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from smartstack.paths_check import READ_ONLY, path_problems, say_unwritable

if TYPE_CHECKING:
    from nerve.config import NerveConfig

log = logging.getLogger("nerve.preflight")
GOES_ON = "nerve registers all the same and tries the write again (the heartbeat every second)"


def preflight(config: NerveConfig, config_path: Path, full: bool) -> tuple[list[str], list[str]]:
    from nerve.daemon import resolve_state_dir

    state_dir = resolve_state_dir(config, config_path)
    paths = {
        "heartbeat_path": Path(config.heartbeat_path) if config.heartbeat_path else None,
        "state_dir": state_dir / "x.json" if state_dir is not None else None,
    }
    heartbeat = [paths["heartbeat_path"]] if paths["heartbeat_path"] else []
    problems = path_problems(paths, heartbeat)  # touch() makes no directory
    if not full:
        say_unwritable(log, problems, GOES_ON)
        return [], []
    errors, notes = [], []
    for problem in problems:
        line = problem.line(config_path)
        if problem.key == "state_dir" or problem.kind == READ_ONLY:
            notes.append(f"{line} (nerve starts all the same)")
        else:
            errors.append(line)
    return errors, notes
