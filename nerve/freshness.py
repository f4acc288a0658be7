"""Whether a service's health verdict is recent enough to act on: pure logic, a given clock.

nerve decides on its last complete check round. A nerve that was stalled (SIGSTOP, a VM
pause, a long GC or swap stall, ``docker pause``) holds a verdict as old as the stall: the
service may have died meanwhile. When the stall outlived its ZooKeeper session or etcd lease
the registration went with it, and writing it back at once would put a service nobody has
looked at for that long back into every HAProxy. So after a stall, a registration the
registry no longer holds is not (re-)written until a fresh round (started after the stall,
not straddling it) has passed every check. One round, not ``rise``: the service was up and
never fell, and a stall of nerve says nothing about the service's flapping, which is what
``rise`` guards against; a fresh pass confirms the verdict the stall interrupted. Failures
count towards ``fall`` as always: a host resuming from a pause is exactly when backends
answer slowly, and one slow check must not withdraw a healthy service (nor, with the
registration standing, change anything at all).

The stall ends at such a passing round, when the service goes down (from then on ``rise``
decides), or after ``rounds`` fresh rounds whatever they said: by max(rise, fall) rounds a
failing check has reached ``fall``, so what is left is a check that gives no verdict (nerve
at its own limits), and no verdict keeps the state as it is, stall or not: a lost
registration must not wait on it for ever.

A freeze shorter than ``limit`` can still cost the registration when the session or lease is
shorter (a 2 s lease against 0.2 s rounds with a 1 s timeout: ``limit`` 2.4 s). Losing it
takes silence for most of the hold (keep-alives and pings go every sixth), so when a
registration was lost, a freeze of LOSS_SHARE of the hold or more that the event loop saw
(nerve/silence.py) after the verdict's round began makes the verdict stale as well
(``silence_behind_loss``). The freeze itself, not the verdict's age: rounds a minute apart
against a 10 s session are no stall (review s32: judged by age, an ordinary outage held a
healthy registration back a whole round).

A stall is seen as a monotonic gap: the last complete round started longer ago than rounds
ever are apart (``limit``), or a round lasted that long (it straddled the stall). An ordinary
registry outage or session loss without a stall keeps the verdict fresh: rounds go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from nerve.silence import Silence, SilenceWatch


def stale_after(check_interval: float, timeouts: list[float]) -> float:
    """The verdict's age beyond which it is stale. Rounds start every ``check_interval``
    (1.5 at most when one moves onto the service's phase, nerve/cadence.py) or when the
    previous one ends (at most the largest timeout after it starts), so the last complete
    round's start is normally at most 1.5 x interval + 2 x timeout old: twice the interval
    plus twice the timeout leaves room for a busy loop."""
    return 2.0 * check_interval + 2.0 * max(timeouts, default=0.0)


class Lost(Protocol):
    """What a reporter says of its registration's loss (nerve/reporters/base.py)."""

    lost_at: float | None

    def hold_s(self) -> float | None: ...


LOSS_SHARE = 2 / 3  # below the 5/6 of the hold a freeze must last to lose it, with room


def silence_behind_loss(verdict_at: float, lost: Lost, watch: SilenceWatch) -> Silence | None:
    """A freeze that may have cost a registration the registry dropped (``lost.lost_at``,
    None: never): one of LOSS_SHARE of its hold or more (``lost.hold_s()``, None: it holds
    the registration for ever) that ended after the verdict's round began (``verdict_at``)."""
    hold = lost.hold_s()
    if lost.lost_at is None or hold is None:
        return None
    return watch.after(verdict_at, LOSS_SHARE * hold)


@dataclass
class Freshness:
    limit: float  # seconds: stale_after()
    verdict_at: float  # monotonic start of the last complete round that straddled no stall
    stalled: float | None = None  # the gap seen, until a fresh round passes
    # When it ended (monotonic): a round started before it is no fresh round (it may
    # straddle a freeze shorter than ``limit``, seen by ``silence_behind_loss``).
    stalled_at: float = float("-inf")
    # A reload's predecessor's verdict (its round's start), until this one's own: the freeze
    # behind a loss is looked for after the older of the two (review s32: a SIGHUP between a
    # freeze and the loss being seen wrote the registration back on the pre-freeze verdict).
    inherited_at: float | None = None
    rounds: int = 1  # fresh rounds a stall lasts at most: max(rise, fall)
    left: int = 0  # fresh rounds this stall may still last

    def check(self, now: float) -> float | None:
        """Whether the verdict may be acted on at ``now``: None when it may; otherwise the
        gap. A gap newly seen is the caller's to log (``seen``)."""
        if self.stalled is None and now - self.verdict_at > self.limit:
            self._stall(now - self.verdict_at, now)
        return self.stalled

    def _stall(self, gap: float, at: float = float("-inf")) -> None:
        self.stalled, self.left, self.stalled_at = gap, self.rounds, at

    def stall_at(self, gap: float, now: float) -> None:
        """A stall seen otherwise than by the gap (``silence_behind_loss``), ended at ``now``."""
        self._stall(gap, now)

    def carry(self, gap: float | None, verdict_at: float | None = None) -> None:
        """A stall seen by the service this one replaces (a SIGHUP reload keeping the
        reporter): its lost registration waits for this one's fresh round. ``verdict_at``:
        the predecessor's last verdict's round start."""
        if gap is not None:
            self._stall(gap)
        self.inherited_at = verdict_at

    def judged_from(self) -> float:
        """The start of the round the verdict in force comes from (a predecessor's, until
        this one completes a round of its own)."""
        if self.inherited_at is None:
            return self.verdict_at
        return min(self.verdict_at, self.inherited_at)

    def seen(self, now: float) -> float | None:
        """The gap, if ``now`` is the moment a stall is first seen (to log once)."""
        before = self.stalled
        gap = self.check(now)
        return gap if before is None else None

    def round_started(self, started: float) -> float | None:
        """A round starts: the gap if a stall is first seen now (this round is the fresh one)."""
        return self.seen(started)

    def round_done(self, started: float, ended: float, passed: bool, down: bool) -> str | None:
        """A round is complete; ``passed``: every check gave a verdict and passed; ``down``:
        the service is down now. Returns what it changed: "straddled" (it lasted across a
        stall: no verdict of today), "confirmed" (a fresh round after a stall passed: act on
        the verdict again), "down" (the service went down: ``rise`` decides from now),
        "expired" (``rounds`` fresh rounds without a pass: the state machine's verdict
        stands, as it would without a stall), "failed" (still stalled), or None."""
        if ended - started > self.limit or started < self.stalled_at:
            if self.stalled is None:
                self._stall(ended - started, ended)
            return "straddled"
        self.verdict_at, self.inherited_at = started, None
        if self.stalled is None:
            return None
        self.left -= 1
        outcome = (
            "confirmed" if passed else "down" if down else "expired" if self.left <= 0 else None
        )
        if outcome is None:
            return "failed"
        self.stalled = None
        return outcome
