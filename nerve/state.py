"""The registration state machine of one service: pure logic, no I/O, no clock of its own.

A service starts unregistered. Each check has its own rise/fall counter; the service is
healthy when every check is up (a service without checks is always healthy, as in
Airbnb's nerve). The service should be registered while it is healthy and not in
maintenance. Every change of that decision is one ``Transition`` (one registry write),
carrying a human-readable reason. Health changes go through the optional token bucket
(``rate_limiting``); maintenance is an operator's order and is never rate limited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nerve.ratelimit import TokenBucket


@dataclass
class CheckTracker:
    """Consecutive-result counter of one check: ``rise`` passes to go up, ``fall`` to go down."""

    rise: int = 1
    fall: int = 1
    up: bool = False
    streak: int = 0  # consecutive results disagreeing with `up`
    last_ok: bool | None = None
    last_detail: str = "not checked yet"
    last_failure: str | None = None  # the detail of the last failed result

    def observe(self, ok: bool, detail: str) -> bool:
        """Record one result; True when the check changed state."""
        self.last_ok, self.last_detail = ok, detail
        if not ok:
            self.last_failure = detail
        if ok == self.up:
            self.streak = 0
            return False
        self.streak += 1
        if self.streak < (self.rise if ok else self.fall):
            return False
        self.up, self.streak = ok, 0
        return True


@dataclass(frozen=True)
class Observation:
    """One check's result as the state machine sees it."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Transition:
    registered: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    transition: Transition | None = None
    # A health change was held back by the token bucket (enforced) or would have
    # been (shadow mode: the change went through, `shadow` is True).
    throttled: bool = False
    shadow: bool = False


@dataclass
class ServiceState:
    trackers: dict[str, CheckTracker]
    bucket: TokenBucket | None = None
    shadow_mode: bool = True
    registered: bool = False
    maintenance: dict[str, str] = field(default_factory=dict)  # source -> reason

    @classmethod
    def create(
        cls,
        checks: Sequence[tuple[str, int, int]],
        bucket: TokenBucket | None = None,
        shadow_mode: bool = True,
        initially_up: bool = False,
    ) -> ServiceState:
        """``checks`` are (name, rise, fall). ``initially_up`` seeds every check as up:
        used when a reload rebuilds a service whose checks have already proven it healthy."""
        trackers = {name: CheckTracker(rise, fall, up=initially_up) for name, rise, fall in checks}
        return cls(trackers, bucket, shadow_mode)

    @property
    def healthy(self) -> bool:
        return all(t.up for t in self.trackers.values())

    @property
    def wanted(self) -> bool:
        return self.healthy and not self.maintenance

    def observe(self, results: Sequence[Observation], now: float) -> Decision:
        """Feed one round of check results; ``now`` is a monotonic time for the bucket."""
        for result in results:
            self.count(result)
        return self.settle(now)

    def count(self, result: Observation) -> None:
        """Count one result as it comes, deciding nothing (``settle`` decides)."""
        tracker = self.trackers.get(result.name)
        if tracker is not None:
            tracker.observe(result.ok, result.detail)

    def settle(self, now: float) -> Decision:
        """Decide on what has been counted: the end of a round."""
        return self._settle(now, limited=True)

    def observe_failure(self, result: Observation, now: float) -> Decision | None:
        """A failed result as soon as it came, before the rest of its round: counted, and
        settled (it can only withdraw) when it took its check down; None otherwise. A pass
        is only counted (``count``) until the round's end (``settle``), so a round never
        registers a service that a slower check of the same round takes down again."""
        tracker = self.trackers.get(result.name)
        if result.ok or tracker is None:
            return None
        if not tracker.observe(False, result.detail):
            return None
        return self._settle(now, limited=True)

    def set_maintenance(self, source: str, reason: str | None, now: float) -> Decision:
        """Enter (reason given) or leave (None) maintenance from one source."""
        if reason is None:
            self.maintenance.pop(source, None)
        else:
            self.maintenance[source] = reason
        return self._settle(now, limited=False)

    def reason(self) -> str:
        if self.maintenance:
            return "maintenance: " + "; ".join(
                f"{source}: {why}" for source, why in sorted(self.maintenance.items())
            )
        down = [_down_reason(n, t) for n, t in self.trackers.items() if not t.up]
        if down:
            return "; ".join(down)
        if not self.trackers:
            return "no checks configured"
        return "all checks up: " + ", ".join(f"{n} rise={t.rise}" for n, t in self.trackers.items())

    def _settle(self, now: float, limited: bool) -> Decision:
        wanted = self.wanted
        if wanted == self.registered:
            return Decision()
        shadow = False
        if limited and self.bucket is not None and not self.bucket.consume(now):
            if not self.shadow_mode:
                return Decision(throttled=True)  # retried on the next round
            shadow = True
        self.registered = wanted
        return Decision(Transition(wanted, self.reason()), throttled=shadow, shadow=shadow)


def _down_reason(name: str, tracker: CheckTracker) -> str:
    """A down check: its last failure, or, passing but not ``rise`` times in a row yet,
    how far it is (its last detail alone, a pass, read as the reason it was down)."""
    if not tracker.last_ok:
        return f"check {name} down ({tracker.last_detail})"
    why = f"; last failure: {tracker.last_failure}" if tracker.last_failure else ""
    return f"check {name} rising ({tracker.streak} of {tracker.rise} passes{why})"


@dataclass
class NeverUp:
    """Check failures of a service not registered since its start or reload.

    A service that never came up has no transition, so nothing said why: a SIGHUP that
    gives a healthy service a wrong ``port`` never registers it (a moved address starts
    unregistered; its old registration stays while its checks pass) with info lines only.
    Once a check has failed ``fall`` times in a row this says so, once: after the service
    was registered a withdrawal logs its reason (``service_withdrawn``), and a reload
    builds a new service (and a new ``NeverUp``).
    """

    armed: bool = True
    failures: dict[str, int] = field(default_factory=dict)  # check -> failures in a row
    told: dict[str, object] | None = None  # what was logged (for /status)

    def observe(
        self, check: str, ok: bool, detail: str, fall: int, registered: bool, paused: bool
    ) -> dict[str, object] | None:
        """One result; the warning's fields when it is due (``paused``: in maintenance,
        where being out is the operator's order)."""
        if registered:
            self.armed, self.told = False, None
            return None
        if ok or paused or not self.armed:
            self.failures.pop(check, None)
            return None
        self.failures[check] = failures = self.failures.get(check, 0) + 1
        if failures < fall:
            return None
        self.armed = False
        self.told = {"check": check, "error": detail, "failures": failures}
        return self.told
