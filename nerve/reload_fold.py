"""SIGHUPs folded as synapse folds them (synapse/daemon.py ``_on_sighup``): at most one
reload running and one to come.

Before, every SIGHUP was a reload of its own, queued behind the others, each with its own
validating child: 20 SIGHUPs in 1 s were still 7 queued reloads 4 s later (28 s on a host
of 4 nerves), and a restart stop in that time withdrew the instance (review s32). Now a
SIGHUP while a reload runs only marks that another one follows; however many came, that
one reads the file as it is when it starts, so the last file written before the last
SIGHUP is always applied and none is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from smartstack.logs import event

log = logging.getLogger("nerve")


class ReloadFold:
    """Runs ``reload`` for SIGHUPs: one at a time, the SIGHUPs during one folded into one
    more after it."""

    def __init__(self, reload: Callable[[], Awaitable[object]]) -> None:
        self._reload = reload
        self.task: asyncio.Task[None] | None = None
        self.again = False  # a SIGHUP came after the running reload began to read the file
        self.closed = False  # a stop has begun: no reload starts any more
        self.runs = 0  # reloads started (the SIGHUPs folded are not among them)

    def sighup(self, announce: bool = True) -> None:
        if self.closed:
            return
        if self.task is None:
            if announce:
                event(log, "signal", signal="SIGHUP", action="reload")
            self.task = asyncio.get_running_loop().create_task(self._run(), name="sighup-reload")
            return
        if not self.again and announce:  # (the SIGHUPs after it fold silently: 20 are not 20 lines)
            event(log, "signal", signal="SIGHUP", action="reload_after",
                  detail="a reload runs: one more follows it, reading the file then")  # fmt: skip
        else:
            log.debug("SIGHUP folded into the reload to come")
        self.again = True

    def retry(self) -> None:
        """A reload whose validating child could not start, again (smartstack.spawn_limits):
        as a SIGHUP, without its log line."""
        self.sighup(announce=False)

    async def _run(self) -> None:
        try:
            while not self.closed:
                # From here on the file is read: a SIGHUP now may follow a newer write.
                self.again = False
                self.runs += 1
                try:
                    await self._reload()
                except Exception:  # a bug in one reload: the one asked after it still runs
                    log.exception("the SIGHUP reload failed")
                if not self.again:
                    return
        finally:
            self.task = None

    def close(self) -> asyncio.Task[None] | None:
        """The stop begins: no further reload; the running one, if any (to cancel)."""
        self.closed = True
        return self.task
