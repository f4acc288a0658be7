"""The config text an express apply owes: rendered once per window, not once per change.

On the express path (``synapse.haproxy.express``) a change of servers only is in HAProxy
once its runtime commands answered. The render, the whole plan, the edge files and the
config file's new text that followed are needed only by what reads that file: the next
reload or start, a revive, a stop (the next synapse adopts HAProxy and trusts the file),
an outside reload. At fleet scale they were most of a change's CPU (issue 15: render
0.42 ms of ~2.9 ms per write). So a change's apply that went wholly express (every
command answered, nothing else to do) leaves them owed, and they are paid:

- by a normal apply (``_later``) once no owed change came for QUIET seconds, and at the
  latest WINDOW seconds after the first owed change: one render of every service changed
  meanwhile, one plan of their backends (which also catches what the commands' read-back
  found: a refused ``del server`` is tried again there). While changes keep streaming
  (a rolling deploy: at fleet scale a batch every ~1.2 s) one render takes in several
  batches instead of one each (issue 15: the paid render was ~9 % of a fleet synapse's
  CPU at one per batch);
- by any apply that renders before that (a change that is not express, a reload, the
  sweep's, a pending reload's): the render takes in every change since the last one;
- at once by ``pay`` under the controller's lock: ``flush()``, ``stop()``.

A managed HAProxy that crashes meanwhile starts from the file as it is and the revive's
bridge adds today's servers at once (as for a change that came while it was down); the
same apply then renders and writes the file. The file (in memory, then on disk, which
``configfile`` already writes at most every WRITE_GAP) lags HAProxy's runtime state by at
most WINDOW more. An outside reload meanwhile loads the file without the owed servers:
the re-read a second after the commands finds the new process if it came by then, and
paying the render hands the owed backends to that re-read once more (``paid``), so a
reload between the two is found a second after the render too, not at the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from smartstack.tasks import cancel_and_wait
from synapse.change_gate import ChangeGate
from synapse.contract import ApplyOutcome, ApplyResult

if TYPE_CHECKING:
    from synapse.haproxy.express import Express
    from synapse.haproxy.reader import RunningReader

log = logging.getLogger("synapse.haproxy")

QUIET = 1.5  # seconds without a new owed change after which the owed render is paid
WINDOW = 5.0  # seconds after the first owed change by which it is paid however many come


class OwedRender:
    """Whether an express apply left the render and the file write owed, and paying it."""

    def __init__(
        self,
        lock: asyncio.Lock,
        apply: Callable[[], Awaitable[object]],
        gate: ChangeGate | None = None,
    ) -> None:
        self._lock, self._apply = lock, apply  # the controller's lock and apply (locked)
        self._gate = gate or ChangeGate()  # a change on its way goes before the render
        self.owed = False
        self.allowed = False  # set by the controller for a change's apply only
        self.deferred = 0  # applies that left their render owed (for /status and tests)
        self.paid_later = 0  # renders paid by ``_later`` (for tests)
        self._first = self._last = 0.0  # loop times of the first and last owed change
        self._task: asyncio.Task[None] | None = None
        self._reader: RunningReader | None = None
        self._backends: set[str] = set()  # the owed changes' backends (read again when paid)

    @contextlib.contextmanager
    def change(self) -> Iterator[None]:
        """A change's apply (the reconciler's) may leave its render owed; no other may (the
        sweep's, a pending reload's, the one that pays)."""
        self.allowed = True
        try:
            yield
        finally:
            self.allowed = False

    def defer(self, reader: RunningReader, express: Express, applied: Sequence[str]) -> ApplyResult:
        """This apply went wholly express: its render is owed, paid QUIET after the last
        owed change or WINDOW after the first, and the backends it sent commands to are
        planned then."""
        backends = express.deferred()
        reader.plan_later(backends)
        self._reader = reader
        self._backends.update(backends)
        express.ready = True  # (nothing left for a reload: the next may go express)
        now = asyncio.get_running_loop().time()
        if not self.owed:
            self._first = now
        self._last, self.owed = now, True
        self.deferred += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later())
        return ApplyResult(tuple(applied), ApplyOutcome.NONE, (), False)

    def paid(self) -> None:
        """An apply rendered: it took in every change since the last render. The owed
        backends are read again a second later: an outside reload before the file had
        them loaded a file without them (the module's docstring)."""
        self.owed = False
        if self._backends and self._reader is not None:
            self._reader.recheck.add(self._backends)
        self._backends = set()

    async def pay(self) -> None:
        """Render and write now, if owed (``flush()``)."""
        async with self._lock:
            if self.owed:
                await self._apply()

    async def close(self) -> None:
        """Pay what is owed and stop (a stop: the next synapse trusts the file). A failure
        is logged: the rest of the stop (the supervisor, HAProxy itself) must still run."""
        async with self._lock:
            if self.owed:
                try:
                    await self._apply()
                except Exception:  # (apply logs HAProxy's failures itself: a bug)
                    log.exception("HAProxy: the owed render at stop failed")
            task, self._task = self._task, None
            await cancel_and_wait(task)  # (sleeping, or waiting for the lock held here)

    async def _later(self) -> None:
        loop = asyncio.get_running_loop()
        # (a render paid meanwhile and new owed changes since: ``defer`` moved _first)
        while (wait := min(self._first + WINDOW, self._last + QUIET) - loop.time()) > 0:
            await asyncio.sleep(wait)
        await self._gate.turn()  # (the next change pays it, or it waits for that one)
        async with self._lock:
            if self.owed:
                self.paid_later += 1
                try:
                    await self._apply()
                except Exception:  # (apply logs HAProxy's failures itself: a bug)
                    log.exception("HAProxy: the owed render failed")
