"""Whether a service's health verdict is recent enough to act on: pure logic, a given clock.

nerve decides on its last complete check round. A nerve that was stalled (SIGSTOP, a VM
pause, a long GC or swap stall, ``docker pause``) holds a verdict as old as the stall: the
service may have died meanwhile. When the stall outlived its ZooKeeper session or etcd lease
the registration went with it, and writing it back at once would put a service nobody has
looked at for that long back into every HAProxy. So after a stall:

- a registration is not (re-)written until one fresh round (started after the stall, not
  straddling it) has passed every check. One round, not ``rise``: the service was up and
  never fell, and a stall of nerve says nothing about the service's flapping, which is what
  ``rise`` guards against; a fresh pass confirms the verdict the stall interrupted.
- in that fresh round a failing check goes down at once (not after ``fall``): the passes
  that ``fall`` would weigh against it are from before the stall and vouch for nothing now.

A stall is seen as a monotonic gap: the last complete round started longer ago than rounds
ever are apart (``limit``), or a round lasted that long (it straddled the stall). An ordinary
registry outage or session loss without a stall keeps the verdict fresh: rounds go on.
"""

from __future__ import annotations

from dataclasses import dataclass


def stale_after(check_interval: float, timeouts: list[float]) -> float:
    """The verdict's age beyond which it is stale. Rounds start every ``check_interval``
    or when the previous one ends (at most the largest timeout after it starts), so the
    last complete round's start is normally at most interval + 2 x timeout old: twice
    the interval plus twice the timeout leaves room for a busy loop."""
    return 2.0 * check_interval + 2.0 * max(timeouts, default=0.0)


@dataclass
class Freshness:
    limit: float  # seconds: stale_after()
    verdict_at: float  # monotonic start of the last complete round that straddled no stall
    stalled: float | None = None  # the gap seen, until a fresh round passes

    def check(self, now: float) -> float | None:
        """Whether the verdict may be acted on at ``now``: None when it may; otherwise the
        gap. A gap newly seen is the caller's to log (``seen``)."""
        if self.stalled is None and now - self.verdict_at > self.limit:
            self.stalled = now - self.verdict_at
        return self.stalled

    def seen(self, now: float) -> float | None:
        """The gap, if ``now`` is the moment a stall is first seen (to log once)."""
        before = self.stalled
        gap = self.check(now)
        return gap if before is None else None

    @property
    def fresh_round(self) -> bool:
        """Whether results now are judged as the first fresh round after a stall."""
        return self.stalled is not None

    def round_started(self, started: float) -> float | None:
        """A round starts: the gap if a stall is first seen now (this round is the fresh one)."""
        return self.seen(started)

    def round_done(self, started: float, ended: float, passed: bool) -> str | None:
        """A round is complete; ``passed``: every check gave a verdict and passed. Returns
        what it changed: "straddled" (it lasted across a stall: no verdict of today),
        "confirmed" (the fresh round after a stall passed: act on the verdict again),
        "failed" (the fresh round did not pass: still stalled), or None."""
        if ended - started > self.limit:
            if self.stalled is None:
                self.stalled = ended - started
            return "straddled"
        self.verdict_at = started
        if self.stalled is None:
            return None
        if passed:
            self.stalled = None
            return "confirmed"
        return "failed"
