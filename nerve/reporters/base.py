"""What every registry reporter shares: desired state, a reconcile task, retries.

The service's state machine only says *whether* it wants to be registered
(``set_registered``). The reporter's single task makes the registry agree: one write per
change, and on failure retries with exponential backoff and jitter (tenacity), forever,
never in a tight loop. Session events (a new ZooKeeper session, a new etcd lease, the
registry reachable again) wake the task at once, so re-registration does not wait for
a backoff to run out. Each attempt reads the *current* wish, so what ends up in the
registry after an outage is the current truth, not a replay of old orders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_exponential_jitter

from nerve.metrics import NerveMetrics
from smartstack.logs import FailureStreak, event
from smartstack.record import Registration
from smartstack.tasks import cancel_and_wait, retryable, wait_event

log = logging.getLogger("nerve.reporter")

BACKOFF_FIRST = 0.2  # seconds; doubles per failed attempt
BACKOFF_MAX = 5.0
BACKOFF_JITTER = 0.5


class RegistryUnavailable(Exception):
    """The registry cannot be written right now (not connected, no lease yet, ...)."""


class WaitForChecks(Exception):
    """A lost registration is not written back on a verdict from before a stall."""


class Reporter(ABC):
    """Keeps one registration in a registry in step with what the service wants."""

    kind = "base"

    def __init__(
        self, service: str, registration: Registration, metrics: NerveMetrics | None = None
    ) -> None:
        self.service = service
        self.registration = registration
        self.metrics = metrics
        self.desired = False
        # Until the service's first decision the registry is left as it is: a registration
        # of a previous run (kill -9, crash) stays until the checks say register (the new
        # one is written before the leftover goes) or withdraw (the leftover goes then).
        self.holding = True
        self.held_rounds = 0  # check rounds while holding, across checks-only reloads
        self._decided = asyncio.Event()
        # A reload is replacing this reporter (set as the hand-over starts): it writes no
        # registration back (registration_vanished), and on retiring removes only what is
        # still its own, not what the successor has written since (see retire).
        self.successor: Reporter | None = None
        self.registered = False  # what we believe the registry holds
        # Unknown registry state (start, a write whose answer was lost): look before writing.
        self.uncertain = True
        self.last_error: str | None = None
        self.tried_register = False
        self.writes = 0
        # An outage is logged when it starts and when it ends (with a count), not per retry.
        self._failures = FailureStreak(log, "registry_write_failed", "registry_write_recovered")
        self._losses = 0  # mark_lost() calls: one during a write makes its outcome doubtful
        self._dirty = asyncio.Event()
        self._dirty.set()
        self._idle = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Whether the service's verdict may be acted on now (its service sets it): after
        # nerve stalled, a lost registration is written back only once a fresh check round
        # has passed (nerve/freshness.py), which wakes us. Withdrawals never wait.
        self.verdict_fresh: Callable[[], bool] = lambda: True
        # A stall its halted service saw and no fresh round ended: a reload's successor
        # that keeps this reporter takes it over (nerve/freshness.py).
        self.stall: float | None = None
        # ... and the start of its last verdict's round, which a freeze may postdate.
        self.verdict_at: float | None = None
        self._waits_for_checks = False
        # When the registry last dropped the registration (monotonic; mark_lost): a verdict
        # from well before it may predate a stall that cost it (nerve/freshness.py).
        self.lost_at: float | None = None

    # --- public -------------------------------------------------------------------

    def start(self) -> None:
        """Begin reconciling (idempotent: a reload may hand the reporter to a new service)."""
        if self._task is not None:
            return
        self._attach()
        self._task = asyncio.get_running_loop().create_task(
            self._sync_forever(), name=f"reporter-{self.service}"
        )

    def set_registered(self, wanted: bool) -> None:
        self.desired = wanted
        self.holding = False
        self._decided.set()
        self.wake()

    def wake(self) -> None:
        """Something changed (wish or session): reconcile now, even in the middle of a backoff."""
        self._idle.clear()
        self._dirty.set()

    def hold_s(self) -> float | None:
        """How long the registry keeps the registration of a silent nerve (its session or
        lease), None when it never drops it by itself."""
        return None

    def mark_lost(self) -> None:
        """The registry dropped our registration (session or lease gone): write it again."""
        self._losses += 1
        self.lost_at = time.monotonic()
        self.registered = False
        self.uncertain = True
        self._update_gauge()
        self.wake()

    def registration_vanished(self, **where: Any) -> None:
        """Another client deleted our registration while the session or lease lives on
        (Ruby nerve's ``ping?``): write it again, as after a lost session. Only while it is
        meant to stand: the deletion that nerve's own withdraw (unhealthy, maintenance,
        shutdown, reload) makes is seen here too, and must not put it back. Nor while a
        reload replaces this reporter (``successor``): the successor's write of the same
        node (a fixed name, another session) looks like a deletion, and writing ours again
        would take it back from the successor, then each in turn (synapse drops the server)."""
        if self._task is None or self.holding or not self.desired or not self.registered:
            return
        if self.successor is not None:
            return
        event(log, "registration_vanished", level=logging.WARNING, service=self.service,
              registry=self.kind, **where)  # fmt: skip
        if self.metrics is not None:
            self.metrics.registration_vanished.labels(self.service, self.kind).inc()
            self.metrics.statsd.incr("nerve", "registry", self.service, "vanished")
        self.mark_lost()

    def rename(self, service: str) -> None:
        """A reload renamed the service (the same registration): log and count under the
        new name from now on."""
        self.service = service
        self._update_gauge()

    def change_record(self, registration: Registration) -> None:
        """A reload changed the record: write it over the old one, never withdrawing it
        on the way (each registry's reporter knows how)."""
        raise NotImplementedError

    @property
    def goes_by_itself(self) -> bool:
        """Whether a registration left behind goes by itself (a session, a lease)."""
        return self._expires()

    @property
    def in_sync(self) -> bool:
        return not self._dirty.is_set() and self._idle.is_set()

    async def wait_in_sync(self) -> None:
        """Until the registry holds what the service wants (admin answers, reload, tests)."""
        await self._idle.wait()

    @property
    def wants(self) -> bool:
        """Whether the service wants to be registered, or has not decided yet."""
        return self.holding or self.desired

    @property
    def written(self) -> bool:
        """Whether the service has decided and the registry holds that decision."""
        return self._decided.is_set() and self._idle.is_set()

    async def wait_written(self) -> None:
        """Until the service has decided and the registry holds that decision."""
        await self._decided.wait()
        await self._idle.wait()

    async def stop(self, withdraw: bool = True) -> None:
        """Stop reconciling; with ``withdraw``, remove the registration (one attempt)."""
        await self.cancel()
        self._detach()
        # Unknown state only matters if we ever tried to register, or kept a previous run's
        # registration while undecided (held: ours to withdraw). A held leftover that
        # expires by itself is only worth a try when the registry answers now; what we may
        # have written (a create whose answer was lost) or what never expires (persistent
        # nodes) gets the bounded attempt, which waits for the connection.
        tried = self.tried_register or self.holding
        doubtful = self._maybe_written() or not self._expires()
        unknown = self.uncertain and tried and (doubtful or self._reachable())
        if withdraw and (self.registered or unknown):
            self.desired, self.holding = False, False
            await self._reconcile()

    async def retire(self, successor: Reporter | None = None) -> None:
        """Withdraw through the retrying task (survives outages), then stop. Used when a
        reload removes or replaces a service; shutdown uses the bounded ``stop``. With
        ``successor`` (a reporter that has already written the service's new registration),
        what the successor took over or overwrote is left to it."""
        self.successor = successor
        self.set_registered(False)
        self.start()
        await self.wait_in_sync()
        await self.cancel()
        self._detach()

    async def cancel(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def where(self) -> dict[str, Any]:
        """Where the registration lives, for /status."""
        return {
            "registry": self.kind,
            "registered": self.registered,
            "last_error": self.last_error,
            "writes": self.writes,
        }

    # --- subclass hooks -----------------------------------------------------------------

    @abstractmethod
    def _attach(self) -> None:
        """Subscribe to session events."""

    @abstractmethod
    def _detach(self) -> None:
        """Unsubscribe from session events."""

    @abstractmethod
    async def _register(self) -> bool:
        """Make the registration exist (and be current); sets ``registered``. Returns
        whether the registry was written (adopting an existing node is not a write)."""

    @abstractmethod
    async def _withdraw(self) -> bool:
        """Make the registration not exist; clears ``registered``. Returns whether the
        registry was written."""

    def _reachable(self) -> bool:
        """Whether the registry can be written right now, as far as we know without asking."""
        return True

    def _maybe_written(self) -> bool:
        """Whether a write of ours may have reached the registry (sent, answer unknown)."""
        return self.tried_register

    def _expires(self) -> bool:
        """Whether a registration left behind goes by itself (a session, a lease)."""
        return True

    def _verdict_holds(self) -> None:
        """Called before a registration the registry does not hold is written, and again by
        the subclass right before the write itself (after any wait for a connection or a
        lease: a session can be lost meanwhile)."""
        if not self.registered and not self.verdict_fresh():
            raise WaitForChecks

    def _needs_write(self) -> bool:
        if self.holding:
            return False  # undecided: whatever the registry holds stays for now
        return self.uncertain or self.desired != self.registered

    # --- the reconcile task ---------------------------------------------------------------

    async def _reconcile(self) -> None:
        self._waits_for_checks = False
        if not self._needs_write():
            return
        losses = self._losses
        try:
            if self.desired:
                self._verdict_holds()
                self.tried_register = True
                wrote, op = await self._register(), "register"
            else:
                wrote, op = await self._withdraw(), "withdraw"
        except WaitForChecks:
            self._waits_for_checks = True  # not in sync: the fresh round's end wakes us
            return
        if self._losses != losses:
            # The session or lease died while we were writing: what the write just set up
            # may have died with it, so the next pass looks again instead of trusting it.
            self.registered = False
            self.uncertain = True
        self.last_error = None
        self._failures.success(service=self.service, registry=self.kind)
        if wrote:
            self.writes += 1
            if self.metrics is not None:
                self.metrics.registry_writes.labels(self.service, self.kind, op).inc()
                self.metrics.statsd.incr("nerve", "registry", self.service, op)
        self._update_gauge()

    def republish(self) -> None:
        """A hand-over's old reporter, withdrawn after this one wrote, set the service's
        gauge last: say this one's again."""
        self._update_gauge()

    def _update_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.registered.labels(self.service).set(1 if self.registered else 0)

    async def _sync_forever(self) -> None:
        while True:
            await self._dirty.wait()
            retrying = AsyncRetrying(
                wait=wait_exponential_jitter(
                    multiplier=BACKOFF_FIRST, max=BACKOFF_MAX, jitter=BACKOFF_JITTER
                ),
                # Every failure, a call cancelled under it too: only our stop ends the loop.
                retry=retry_if_exception(retryable),
                sleep=self._backoff,
                before_sleep=self._log_failure,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    self._dirty.clear()
                    await self._reconcile()
            if not self._dirty.is_set() and not self._waits_for_checks:
                self._idle.set()

    async def _backoff(self, seconds: float) -> None:
        # A wake-up (new session, new wish) ends the wait early: no stale backoff delays
        # a re-registration once the registry is back.
        await wait_event(self._dirty, seconds)

    def _log_failure(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.last_error = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
        if self.metrics is not None:
            self.metrics.registry_errors.labels(self.service, self.kind).inc()
            self.metrics.statsd.incr("nerve", "registry", self.service, "error")
        wait = state.next_action.sleep if state.next_action else 0.0
        self._failures.failure(
            self.last_error[:200],
            service=self.service,
            registry=self.kind,
            want="registered" if self.desired else "withdrawn",
            retry_in=round(wait, 2),
        )
