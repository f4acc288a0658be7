"""Restarting the managed HAProxy when its master dies: the first crash at once, repeated
ones backing off (``restart_delay``); the restart itself is the controller's. A master that
was replaced (its sockets were gone: synapse.haproxy.replacement) did not die: ``wait_exit``
follows the new one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait

if TYPE_CHECKING:
    from synapse.haproxy.managed import ManagedHAProxy

log = logging.getLogger("synapse.haproxy")  # (where its events always were)
STABLE_RUN = 30.0  # seconds a restarted HAProxy must live before its crashes are forgiven
MAX_RESTART_DELAY = 60.0
# A restart due this soon keeps synapse's copies of the listening sockets: clients wait in
# their queue for it (better slow than refused: a second kill -9 within 30 s refused ~194
# connections per frontend during a 1 s back-off); a longer back-off refuses them.
HOLD_THROUGH = 2.0


class Supervisor:
    """Restarts the managed HAProxy when it dies, backing off when it keeps dying.

    ``restart`` is called after the delay (the controller: under its lock, it applies the
    desired state, which starts HAProxy); ``interval`` is the current restart_interval.
    """

    def __init__(
        self,
        haproxy: ManagedHAProxy,
        restart: Callable[[], Awaitable[None]],
        interval: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.haproxy = haproxy
        self._restart = restart
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        self.first_crash = False  # HAProxy died after a stable run, not restarted yet

    def watch(self) -> None:
        """Watch the running master (a no-op while watching already)."""
        if not self.stopping and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        self.stopping = True
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _watch(self) -> None:
        failures = 0
        while not self.stopping:
            began = self._clock()
            status = await self.haproxy.wait_exit()
            if self.stopping:
                return
            # A long healthy run forgives earlier crashes; a crash loop backs off.
            failures = 1 if self._clock() - began > STABLE_RUN else failures + 1
            delay = restart_delay(failures, self._interval())
            self.first_crash = not delay
            if delay > HOLD_THROUGH:  # not back soon: clients are refused, not kept waiting
                self.haproxy.drop_listeners()
            event(log, "haproxy_exited", level=logging.ERROR, status=status,
                  restart_in_s=round(delay, 1), output=self.haproxy.output_tail(5))  # fmt: skip
            if delay:
                await asyncio.sleep(delay)
            dead = self.haproxy.master_pid
            try:
                await self._restart()
            except BaseException:
                self.haproxy.drop_listeners()  # nobody is coming to accept what waits
                raise
            finally:
                self.first_crash = False
            if self.haproxy.master_pid in (dead, None) and not self.haproxy.alive:
                # Nothing started (its socket directory read-only, held; one that started
                # and died is watched on: the crash loop's backoff):
                # wait_exit would return the dead one's status at once, said again and
                # again (review s29: 11 times in 300 s). The reload gate retries the start,
                # which watches the new process; meanwhile clients are refused, not queued.
                self.haproxy.drop_listeners()
                return


def restart_delay(failures: int, interval: float) -> float:
    """Seconds before restarting after the ``failures``-th crash in a row: the first one
    is restarted at once (an outage costs more than a retry), a crash loop backs off."""
    if failures <= 1:
        return 0.0
    return min(MAX_RESTART_DELAY, max(interval, 0.5) * 2 ** (failures - 2))
