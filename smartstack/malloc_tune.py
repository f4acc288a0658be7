"""glibc malloc settings: synapse with a fleet's state, and every nerve (issue 15).

glibc serves blocks of 128 KB and more with mmap, but after freeing one it raises that
threshold to the freed size (up to 32 MB). synapse's multi-MB transients (a config
text joined for a reload, a whole `show servers state` answer) then come from the brk
heap, and the long-lived small blocks allocated after them keep that heap from
shrinking. Fixing the threshold (which also turns the raising off) and capping the
arenas of helper threads (``asyncio.to_thread``) measured 107-110 MB -> 98-99 MB RSS
at 1,000 services x 20 servers.

nerve: asyncio reads every socket and pipe into a fresh 256 KB bytes object, shrunk to
what arrived. Once the threshold had risen past 256 KB (a nerve's did, to 260 KB), each
such buffer was carved from the heap's top, and a small block placed beside it that
lived on kept the top from getting it back: a soak nerve's heap grew 132 KB every ~15
minutes, each time for a 256 KB read (BENCHMARKS.md, session 50). With the threshold
fixed the buffers are mapped and unmapped: the heap stayed flat, and a nerve starts
~0.6 MB smaller (ctypes' ~0.4 MB included).

A synapse sidecar is not tuned: importing ctypes costs ~0.4 MB and a fixed threshold
saved it ~0.1 MB. A setting the operator gave glibc (environment) is left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1  # mallopt parameters (glibc's malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# glibc's initial values, kept fixed. By the time the daemon tunes, a read at EOF may have
# raised both (the trim threshold to twice the mmap one: up to ~520 KB of free top kept,
# room to carve read buffers from): both are set back to what the soak measured with a
# threshold fixed from the start (MALLOC_MMAP_THRESHOLD_=131072, BENCHMARKS.md session 50).
TRIM_THRESHOLD = 128 * 1024
MMAP_THRESHOLD = 128 * 1024
ARENA_MAX = 2
FLEET_SERVICES = 100  # from this many services on
# (mallopt parameter, value, its environment variable, its GLIBC_TUNABLES name)
SETTINGS = (
    (M_TRIM_THRESHOLD, TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", "malloc.trim_threshold"),
    (M_MMAP_THRESHOLD, MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", "malloc.mmap_threshold"),
    (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX", "malloc.arena_max"),
)


def wanted(env: Mapping[str, str]) -> dict[int, int]:
    """The mallopt settings to make: those the environment does not set already."""
    tunables = env.get("GLIBC_TUNABLES", "")
    return {
        param: value
        for param, value, variable, tunable in SETTINGS
        if variable not in env and tunable not in tunables
    }


def tune_malloc_for_fleet(services: int, env: Mapping[str, str] = os.environ) -> list[int]:
    """synapse: ``tune_malloc`` from FLEET_SERVICES services on (a sidecar is left alone)."""
    return tune_malloc(env) if services >= FLEET_SERVICES else []


def tune_malloc(env: Mapping[str, str] = os.environ) -> list[int]:
    """Set ``wanted``; the parameters set (none without glibc)."""
    if not sys.platform.startswith("linux"):
        return []
    settings = wanted(env)
    if not settings:
        return []
    try:  # (imported here: a synapse sidecar never pays for it)
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (ImportError, OSError, AttributeError):  # a Python without _ctypes; not glibc
        return []  # (glibc's defaults: the daemon runs on, untuned)
    return [param for param, value in settings.items() if mallopt(param, value) == 1]
