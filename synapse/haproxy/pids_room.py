"""Room for the managed HAProxy's new worker under the pids limit of synapse's cgroup.

A managed HAProxy is synapse's child, in its cgroup: at a reload its master forks a new
worker, which starts ``nbthread`` threads (HAProxy 2.6: one per CPU by default), and every
one counts against the container's ``pids.max`` (systemd ``TasksMax``). With fewer free
than that, the fork and ``haproxy -c`` (one process) pass, the master reports "Loading
success" and stops the old worker, and the new one, short of its threads, serves nothing:
review s34 measured every request failing (timed out) until the reload timed out, 60 s and
more. So a reload with too little room is not made: it is a failed reload (retried after
the backoff, ``haproxy_check_unanswered`` naming the limit) while the old worker serves.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
MARGIN = 2  # the new worker's own process, and synapse's threads and children meanwhile
NBTHREAD = re.compile(r"^\s*nbthread\s+(\d+)\s*(?:#.*)?$", re.MULTILINE)


def pids_free(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = CGROUP_ROOT
) -> tuple[int, int, Path] | None:
    """(free, limit, directory) of the tightest pids limit over synapse's cgroup and the
    ones above it (v1 ``pids`` or v2); None when none is set or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    tightest: tuple[int, int, Path] | None = None
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if "pids" in controllers.split(","):
            base = root / "pids"
        elif hierarchy == "0" and not controllers:  # v2 (hybrid: mounted at unified/)
            base = root if (root / "cgroup.controllers").exists() else root / "unified"
        else:
            continue
        # (a path outside this mount, a container without its cgroup namespace: the walk
        # up finds the mount's own files, the container's limit)
        directory = base / path.strip("/")
        while True:
            found = _limit(directory)
            if found is not None and (tightest is None or found[0] < tightest[0]):
                tightest = found
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    return tightest


def _limit(directory: Path) -> tuple[int, int, Path] | None:
    try:
        limit = (directory / "pids.max").read_text().strip()
        current = int((directory / "pids.current").read_text())
    except (OSError, ValueError):
        return None
    if not limit.isdigit():  # "max"
        return None
    return int(limit) - current, int(limit), directory


def nbthread(config_text: str) -> int:
    """The threads HAProxy 2.6 starts per worker: ``nbthread``, else one per CPU it may use."""
    found = NBTHREAD.search(config_text)
    return int(found.group(1)) if found else len(os.sched_getaffinity(0))


def too_little_room(config_text: str, free: tuple[int, int, Path] | None) -> str | None:
    """The error of a reload that would start a worker short of its threads; None: room."""
    if free is None:
        return None
    threads = nbthread(config_text)
    need = threads + MARGIN
    room, limit, directory = free
    if room >= need:
        return None
    return (
        f"the config check did not run: HAProxy not reloaded: {max(room, 0)} processes or "
        f"threads free under the pids limit {limit} ({directory}/pids.max), its new worker "
        f"needs {need} (nbthread {threads} + {MARGIN}) and would serve nothing short of "
        "them: raise the container's pids.max / systemd TasksMax (or lower nbthread)"
    )
