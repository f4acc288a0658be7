"""The state file again, for the services it could not serve because of the wall clock.

A synapse restarted while its registry is down serves each silent service from the state
file's servers seen within ``state_file_ttl`` (``synapse.state_cache``); after a reboot
with the clock stepped ahead (an RTC wrong at boot, NTP not synced yet) even a 10-s-old
file looks older than that, and the service starts empty. Once NTP corrects the clock
those servers are fresh again: the reconciler looks at the file again for every silent
service with nothing to serve, on its periodic tick and as soon as it sees the wall clock
step against boottime (``smartstack.boot_clock.WallStep``, polled every
CLOCK_CHECK_INTERVAL), when the state file's own stamps are moved by the step and the
file written at once (``StateCache.clock_stepped``). Entries older than the TTL stay
unserved however long the registry stays silent: a day-old port may be another service's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from smartstack.boot_clock import WallStep
from smartstack.logs import event
from synapse.selection import ORIGIN_NONE, ORIGIN_STATE_FILE

if TYPE_CHECKING:
    from synapse.reconciler import Reconciler
    from synapse.reload_diff import ServiceState
    from synapse.state_cache import StateCache

log = logging.getLogger("synapse.state_recheck")

CLOCK_CHECK_INTERVAL = 2.0  # seconds between looks at the wall clock against boottime
# A silent service's selection that reads the state file again (a SIGHUP's new discovery,
# whose previous list stays, does not): its own, or nothing (its entries were too old).
STATE_FILE_READ = (ORIGIN_STATE_FILE, ORIGIN_NONE)


def waiting_for_state_file(
    services: Mapping[str, ServiceState], cache: StateCache | None
) -> list[str]:
    """The services without a registry report that serve nothing (``none``: nothing was
    there to start from) and for which the state file now has servers within the TTL."""
    if cache is None:
        return []
    return [
        name
        for name, service in services.items()
        if service.report is None
        and service.selection is not None
        and service.selection.origin == ORIGIN_NONE
        and cache.cached(name)
    ]


async def watch_wall_clock(
    reconciler: Reconciler, interval: float = CLOCK_CHECK_INTERVAL, step: WallStep | None = None
) -> None:
    """Until cancelled: on a step of the wall clock, move the state file's stamps by it,
    write the file, and look at it again for the services waiting for it."""
    watch = step or WallStep()
    while True:
        await asyncio.sleep(interval)
        # The cache moves its stamps by the step not applied to them yet, against its own
        # baseline (set at the load): a step an update applied already is not applied again,
        # and one made before this task's baseline (during the start) is not missed.
        moved, cache = watch.poll(), reconciler.state_cache
        caught: float | None = None
        if cache is not None and cache.step_pending():
            with contextlib.suppress(Exception):  # (StateCache reports its own failures)
                caught = await asyncio.to_thread(cache.clock_stepped)
        if moved is None and caught is None:
            continue
        event(log, "wall_clock_stepped", level=logging.WARNING,
              step_s=round(moved if moved is not None else caught or 0.0, 1),
              effect="state file stamps moved, file written" if caught else "none")  # fmt: skip
        reconciler.recheck_state_file()
