"""What ``nerve -k`` checks beyond the file's schema, on this host: the files nerve writes
(``heartbeat_path``, the maintenance flags in ``state_dir``) can be created.

nerve keeps registering when they cannot (a heartbeat or a flag is worth less than the
registrations), so at start a problem is a note on stderr; with ``-k`` it is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from smartstack.paths_check import writable_problems

if TYPE_CHECKING:
    from nerve.config import NerveConfig


def preflight(config: NerveConfig, config_path: Path, full: bool) -> tuple[list[str], list[str]]:
    from nerve.daemon import resolve_state_dir

    state_dir = resolve_state_dir(config, config_path)
    paths = {
        "heartbeat_path": Path(config.heartbeat_path) if config.heartbeat_path else None,
        "state_dir": state_dir / "x.json" if state_dir is not None else None,
    }
    heartbeat = [paths["heartbeat_path"]] if paths["heartbeat_path"] else []
    problems = writable_problems(config_path, paths, heartbeat)  # touch() makes no directory
    return (problems, []) if full else ([], problems)
