"""The reload that waits for its turn: one task that runs it when the reload gate says so.

The gate (``synapse.haproxy.reload_gate``) decides and remembers which reload waits; this
task sleeps until it is due, then has the controller apply the latest desired state
under its lock (which reloads, unless runtime operations got there meanwhile). While the
retry of a failed reload waits, it looks at HAProxy every LOOK_PERIOD (``first_answer``):
HAProxy's first answer after a silence makes the retry due at once (``ReloadGate.heard``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.haproxy.first_answer import LOOK_PERIOD, AnswerLook
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.reload_gate import ReloadGate

log = logging.getLogger("synapse.haproxy")


class PendingReload:
    def __init__(
        self,
        gate: ReloadGate,
        lock: asyncio.Lock,
        apply: Callable[[], Awaitable[object]],
        metrics: HAProxyMetrics,
        look: AnswerLook | None = None,
    ) -> None:
        self.gate = gate
        self._look = look  # whether HAProxy answers (None: no look)
        self._lock = lock  # the controller's
        self._apply = apply  # called under the lock
        self.metrics = metrics
        self.task: asyncio.Task[None] | None = None

    def wait_for_turn(self, reload: Reload, announce: bool = False) -> None:
        self.gate.wait(reload)
        self.metrics.reload_pending.set(1)
        if self.task is None:
            self.task = asyncio.create_task(self._run())
            if announce:
                event(log, "haproxy_reload_scheduled", reason=reload.summary,
                      in_s=round(self.gate.due_in(), 3))  # fmt: skip

    def clear(self) -> None:
        """Nothing waits any more (done by a reload, or not needed)."""
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
        self.task = None
        self.gate.take_pending()
        self.metrics.reload_pending.set(0)
        if self._look is not None:
            self._look.drop()

    async def done(self) -> None:
        """Until no reload waits (and none runs: that holds the lock)."""
        while True:
            if self.task is not None:
                await asyncio.wait({self.task})
                continue
            async with self._lock:
                if self.task is None:
                    return

    async def cancel(self) -> None:
        task, self.task = self.task, None
        await cancel_and_wait(task)
        if self._look is not None:
            self._look.drop()

    async def _run(self) -> None:
        try:
            while True:
                delay = self.gate.due_in()
                if delay > 0:
                    await self._pause(delay)
                    if not self.gate.due:
                        continue
                async with self._lock:
                    if not self.gate.due:
                        continue  # another reload went first: wait for the new slot
                    self.task = None
                    self.gate.take_pending()
                    self.metrics.reload_pending.set(0)
                    await self._apply()
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the pending reload silently
            log.exception("pending HAProxy reload failed")
            self.task = None

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay``; after a failed reload, a look at HAProxy every LOOK_PERIOD."""
        if self._look is None or not self.gate.failures:
            await asyncio.sleep(delay)  # (a rate-limited reload: HAProxy is fine)
            return
        loop = asyncio.get_running_loop()
        period, began, due_at = min(delay, LOOK_PERIOD), loop.time(), self.gate.next_at
        answered = await self._look.answers(period)  # (None: says nothing, a busy socket)
        if answered is not None and self.gate.heard(answered):
            pending = self.gate.pending
            event(log, "haproxy_answers_again",
                  reason=pending.summary if pending else None, failures=self.gate.failures,
                  retry_in_s=round(self.gate.due_in(), 1),
                  instead_of_s=round(max(0.0, due_at - self.gate.clock()), 1),
                  detail="HAProxy answers again: the failed reload is retried now")  # fmt: skip
            return
        await asyncio.sleep(max(0.0, period - (loop.time() - began)))  # (answered at once)
