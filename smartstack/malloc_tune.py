"""glibc malloc settings for a process that holds a fleet's state (issue 15).

glibc serves blocks of 128 KB and more with mmap, but after freeing one it raises that
threshold to the freed size (up to 32 MB). synapse's multi-MB transients (a config
text joined for a reload, a whole `show servers state` answer) then come from the brk
heap, and the long-lived small blocks allocated after them keep that heap from
shrinking. Fixing the threshold (which also turns the raising off) and capping the
arenas of helper threads (``asyncio.to_thread``) measured 107-110 MB -> 98-99 MB RSS
at 1,000 services x 20 servers. Only for fleets: importing ctypes costs a sidecar
~0.4 MB for nothing. A setting the operator gave glibc (environment) is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3  # mallopt parameters (glibc's malloc.h)
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, kept fixed
ARENA_MAX = 2
FLEET_SERVICES = 100  # from this many services on


def wanted(env: Mapping[str, str]) -> dict[int, int]:
    """The mallopt settings to make: those the environment does not set already."""
    tunables = env.get("GLIBC_TUNABLES", "")
    settings: dict[int, int] = {}
    if "MALLOC_MMAP_THRESHOLD_" not in env and "malloc.mmap_threshold" not in tunables:
        settings[M_MMAP_THRESHOLD] = MMAP_THRESHOLD
    if "MALLOC_ARENA_MAX" not in env and "malloc.arena_max" not in tunables:
        settings[M_ARENA_MAX] = ARENA_MAX
    return settings


def tune_malloc(services: int, env: Mapping[str, str] = os.environ) -> list[int]:
    """Set ``wanted`` for a process with ``services`` services; the parameters set (none
    below FLEET_SERVICES, or without glibc)."""
    if services < FLEET_SERVICES or not sys.platform.startswith("linux"):
        return []
    settings = wanted(env)
    if not settings:
        return []
    import ctypes  # here: a sidecar never pays for it

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6)
        return []
    return [param for param, value in settings.items() if mallopt(param, value) == 1]
