"""The reload gate: decides when a needed reload may run. No I/O; the clock is injected.

- Reloads are at least ``restart_interval`` (+ a random ``restart_jitter`` fraction of
  it) apart; one asked for meanwhile waits (the controller runs it when it is due, and
  the ones asked for until then coalesce into it: ``pending`` holds the latest).
- After a failed reload the next attempt waits a backoff: ``restart_interval`` (at
  least 1 s) doubling per failure, up to MAX_BACKOFF (or less: a file that could not be
  written is tried again every few seconds, so the reload follows soon after the space),
  counted from when the attempt ended: one that hung for its whole ``reload_timeout``
  was due again the moment it failed, and took the controller's lock again at once.
- Meanwhile HAProxy is looked at (``heard``, ``pending``): its first answer after a silence
  (a stopped master, HAProxy down) makes the retry due at once, once per silence and not
  before the backoff's first step after the last attempt: after a long outage the reload
  waited out the grown backoff (up to 60 s) once HAProxy answered again. A reload that
  fails while HAProxy answers (a hung ``reload_command``) keeps backing off.
- A candidate found invalid is *refused*: not tried again until the desired state
  changes (a config reload of synapse forgets it).
- A candidate HAProxy still differed from right after reloading it is *settled*:
  reloading it again would loop, so it waits for the next change too.
- A managed HAProxy that is down starts at once, unless starts keep failing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from synapse.haproxy.ops import Reload

MAX_BACKOFF = 60.0  # seconds between attempts after repeated reload failures


class GateDecision(Enum):
    RELOAD = "reload"  # now
    WAIT = "wait"  # not yet (rate limit, backoff): a pending reload runs it when due
    REFUSED = "refused"  # this candidate was found invalid
    SETTLED = "settled"  # reloaded with exactly this candidate, and HAProxy still differed


@dataclass
class ReloadGate:
    restart_interval: float
    restart_jitter: float
    clock: Callable[[], float]
    rng: Callable[[], float]  # uniform in [0, 1)
    next_at: float = 0.0  # no reload before this time (clock's)
    failures: int = 0  # failed reloads in a row
    failed_at: float = 0.0  # when the last one ended (clock's)
    silent: bool = False  # HAProxy did not answer a look since the failures began
    refused: str | None = None  # the candidate text found invalid
    settled: str | None = None
    pending: Reload | None = None  # the reload waiting for its turn

    def decide(self, candidate: str, down: bool = False) -> GateDecision:
        """Whether to reload into ``candidate`` now; ``down``: a managed HAProxy is not running."""
        if candidate == self.refused:
            return GateDecision.REFUSED
        if candidate == self.settled and not down:
            return GateDecision.SETTLED
        if down and not self.failures:
            return GateDecision.RELOAD  # a first start is not rate limited
        return GateDecision.RELOAD if self.due else GateDecision.WAIT

    @property
    def due(self) -> bool:
        return self.clock() >= self.next_at

    def due_in(self) -> float:
        """Seconds until a reload may run (0: now)."""
        return max(0.0, self.next_at - self.clock())

    def wait(self, reload: Reload) -> None:
        """``reload`` waits for its turn (it replaces one that waited: it includes it)."""
        self.pending = reload

    def take_pending(self) -> Reload | None:
        pending, self.pending = self.pending, None
        return pending

    def validated(self, began: float) -> None:
        """A valid candidate is being installed (at ``began``): the next one waits its turn."""
        self.refused = None
        self.next_at = began + self.restart_interval * (1 + self.restart_jitter * self.rng())

    def reloaded(self) -> None:
        self.failures, self.silent = 0, False
        self.pending = None  # whatever waited is in this reload

    def failed(self, cap: float | None = None) -> float:
        """A reload failed just now: the seconds until the next attempt (at most ``cap``: a
        failure that costs nothing to try again, a file that could not be written)."""
        self.failures += 1
        longest = MAX_BACKOFF if cap is None else min(cap, MAX_BACKOFF)
        backoff = min(longest, self._first_backoff * 2 ** (self.failures - 1))
        self.failed_at = self.clock()
        self.next_at = self.failed_at + backoff
        return backoff

    def heard(self, answered: bool) -> bool:
        """A look at HAProxy while a failed reload waits (``answered``: it answered). Its
        first answer after a silence makes the retry due now (at the earliest the backoff's
        first step after the last attempt ended), once: True when it did. The silence may
        have been seen before the last attempt: one that failed just before HAProxy came
        back does not wait out its backoff either."""
        if not self.failures:
            return False  # (a rate-limited reload: no outage)
        if not answered:
            self.silent = True
            return False
        if not self.silent:
            return False  # it answered all along: the reload itself fails (a hung command)
        self.silent = False
        soonest = max(self.clock(), self.failed_at + self._first_backoff)
        if soonest >= self.next_at:
            return False
        self.next_at = soonest
        return True

    @property
    def _first_backoff(self) -> float:
        return max(self.restart_interval, 1.0)

    def refuse(self, candidate: str | None) -> None:
        """``candidate`` is invalid (None: the template did not render)."""
        self.refused = candidate

    def settle(self, candidate: str | None) -> None:
        """After a reload: HAProxy still differs from ``candidate`` (None: it matches)."""
        self.settled = candidate

    def no_reload_needed(self) -> None:
        """HAProxy runs the desired state without a reload: nothing waits, nothing is refused."""
        self.refused = None
        self.pending = None

    def configure(self, restart_interval: float, restart_jitter: float) -> None:
        """A changed ``haproxy`` block: new limits, and every candidate gets a new chance."""
        self.restart_interval, self.restart_jitter = restart_interval, restart_jitter
        self.refused = self.settled = None
