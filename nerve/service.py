"""One watched service: its checks, its state machine and its reporter, on its own task.

A ``Service`` is built from parts (so other sources than the config file, e.g. Docker
labels, can build one): every ``check_interval``, at its own phase (nerve/cadence.py), it
runs its checks concurrently (20 ms apart), each cut by its timeout, feeds each result
to the state machine as it comes (a dead service goes without waiting for a slower check),
decides a registration once the round is complete and hands each transition to the
reporter. A check nerve could not run for want of its own resources gives no verdict (not
counted, logged once per streak). Nothing here waits for the registry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nerve.cadence import WAKE, Cadence
from nerve.check_status import record_check, record_no_verdict, service_status
from nerve.checks.base import Check, CheckResult
from nerve.freshness import Freshness, silence_behind_loss, stale_after
from nerve.maintenance import UNKNOWN, MaintenanceEnd, MaintenanceFlag, MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.ratelimit import TokenBucket
from nerve.reporters.base import Reporter
from nerve.silence import SILENCE
from nerve.state import Decision, NeverUp, Observation, ServiceState
from smartstack.logs import event
from smartstack.tasks import cancel_and_wait

if TYPE_CHECKING:
    from nerve.handover import Predecessor

log = logging.getLogger("nerve.service")

ADMIN = "admin"  # maintenance source: `nerve maint` / the admin API
FILE = "maintenance_file"  # maintenance source: the service's maintenance_file exists


class Service:
    def __init__(
        self,
        name: str,
        checks: Sequence[Check],
        thresholds: Sequence[tuple[int, int]],
        reporter: Reporter,
        *,
        check_interval: float = 0.5,
        metrics: NerveMetrics | None = None,
        rate_limit: tuple[float, float, bool] | None = None,
        maintenance: MaintenanceStore | None = None,
        maintenance_file: str | None = None,
        initially_up: bool = False,
    ) -> None:
        """``thresholds`` are each check's (rise, fall); ``rate_limit`` is
        (average_rate, max_burst, shadow_mode)."""
        self.name = name
        self.checks = list(checks)
        self.reporter = reporter
        self.check_interval = check_interval
        self.cadence = Cadence.of(name, check_interval)
        self.metrics = metrics
        self.store = maintenance or MaintenanceStore(None)
        self.maintenance_file = maintenance_file
        loop_now = time.monotonic()
        bucket, shadow = None, True
        if rate_limit is not None:
            bucket, shadow = TokenBucket(rate_limit[0], rate_limit[1], loop_now), rate_limit[2]
        self.state = ServiceState.create(
            [(c.name, rise, fall) for c, (rise, fall) in zip(self.checks, thresholds, strict=True)],
            bucket,
            shadow,
            initially_up=initially_up,
        )
        # A reused reporter (reload) keeps its registration: start from what it holds.
        self.state.registered = reporter.desired
        if reporter.holding and not initially_up:
            # A checks-only reload during the hold continues it: every round held so far
            # passed every check (a failure ends the hold), so the new checks start there.
            for tracker in self.state.trackers.values():
                tracker.streak = min(reporter.held_rounds, tracker.rise - 1)
        self.last_results: dict[str, CheckResult] = {}  # the last verdict of each check
        self.no_verdict: dict[str, tuple[int, CheckResult]] = {}  # check: (in a row, last)
        self.rounds = 0
        self.never_up = NeverUp(armed=not self.state.registered)
        limit = stale_after(check_interval, [c.timeout for c in self.checks])
        most = max((max(rise, fall) for rise, fall in thresholds), default=1)
        self.freshness = Freshness(limit, loop_now, rounds=most)  # (nerve/freshness.py)
        self.freshness.carry(reporter.stall, reporter.verdict_at)  # a reload keeping the reporter
        reporter.stall = reporter.verdict_at = None
        reporter.verdict_fresh = self._verdict_fresh
        self.round_started = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flag_unknown = True  # until the maintenance flag could be read
        self._stand_in = False  # the flag in force stands in for an unreadable file
        self._maintenance_end = MaintenanceEnd()
        # A SIGHUP hand-over's old registration, until it is withdrawn (nerve/handover.py).
        self.predecessor: Predecessor | None = None
        self._load_flag(loop_now)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        # Built a while ago (a hand-over waited), its first round spread: neither is a stall.
        self.freshness.verdict_at = max(self.freshness.verdict_at, time.monotonic())
        self.reporter.start()
        self.publish_gauges()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run_forever(), name=f"service-{self.name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def registered(self) -> bool:
        """Whether the registry holds this service: its own registration, or a hand-over's
        old one not withdrawn yet (consumers still send to it)."""
        old = self.predecessor
        return self.reporter.registered or (old is not None and old.reporter.registered)

    async def wait_in_sync(self) -> None:
        """Until the registry holds what the service wants, a hand-over's old registration
        withdrawn too, not a move's kept while the new address rises (the admin API answers)."""
        await self.reporter.wait_in_sync()
        if self.predecessor is not None and not self.predecessor.kept_for_move:
            await self.predecessor.gone.wait()

    @property
    def crashed(self) -> bool:
        """Started, and its task ended by itself (it never should)."""
        return self._task is not None and self._task.done()

    async def halt(self) -> None:
        """Stop checking; the reporter (and the registration) stay as they are."""
        if self.reporter.verdict_fresh == self._verdict_fresh:  # (not a reload's successor's)
            # No rounds now: a registration lost meanwhile is written back on the last word
            # unless nerve stalled; a successor keeping the reporter takes stall and verdict.
            stall = self.reporter.stall = self.freshness.check(time.monotonic())
            self.reporter.verdict_at = self.freshness.judged_from()  # (silence_behind_loss)
            self.reporter.verdict_fresh = lambda: stall is None
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await asyncio.gather(*(c.close() for c in self.checks), return_exceptions=True)

    async def stop(self, withdraw: bool = True) -> None:
        """Stop checking; with ``withdraw``, remove the registration (the caller bounds the
        time this may take)."""
        await self.halt()
        await self.reporter.stop(withdraw=withdraw)

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        # At its own phase: lockstep rounds overflow a shared port's queue (nerve/cadence.py)
        await asyncio.sleep(self.cadence.first_delay())
        origin = loop.time()  # its own grid: rounds an interval apart from here
        due = origin
        while True:
            started = loop.time()
            try:
                await self.run_round(due)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one round must not end the service's watch
                log.exception("check round of %s failed", self.name)
            due, began = self.cadence.next_start(started, origin), loop.time()
            await asyncio.sleep(max(0.0, due - began))
            WAKE.note(max(due, began), loop.time())  # a stall of nerve (nerve/cadence.py)

    async def run_round(self, due: float | None = None) -> None:
        """Every check at least once. A failure is acted on as it comes (a dead service is
        not left registered while a slower check runs on). A check that has answered while
        a slower sibling still runs starts again on its own cadence (``check_interval``
        after its last start), so a slow check delays no other check's verdict. Each result
        is counted as it comes; a registration is decided at the round's end, once every
        check has answered (a registration needs the whole round)."""
        self.round_started.set()
        round_start = time.monotonic()
        self._stall_seen(self.freshness.round_started(round_start), "round_start")
        loop = asyncio.get_running_loop()
        order = {check.name: n for n, check in enumerate(self.checks)}
        waiting = set(order)  # checks yet to answer in this round
        heard: set[str] = set()  # checks that gave a verdict in this round
        asleep: set[str] = set()  # re-runs waiting for their turn (dropped at the round's end)
        pending: dict[asyncio.Task[CheckResult], tuple[Check, float]] = {}

        offsets = self.cadence.check_offsets(len(order))  # 20 ms apart: one port's checks

        async def run_at(check: Check, when: float) -> CheckResult:
            try:
                began = loop.time()
                await asyncio.sleep(when - began)
                WAKE.note(max(when, began), loop.time())
                # Held by a stall: at its place after the wake, not in the wake's burst.
                slot = WAKE.start(when, loop.time(), self.cadence, offsets[order[check.name]])
                if slot > loop.time():
                    asleep.add(check.name)
                    await asyncio.sleep(slot - loop.time())
                address = getattr(check, "host", None), getattr(check, "port", None)
                paced = loop.time()  # one port's checks: a few at a time right after a wake
                while (wait := WAKE.pace(loop.time(), address, paced)) > 0:
                    await asyncio.sleep(wait)
            finally:
                asleep.discard(check.name)
            return await check.run()

        def launch(check: Check, when: float) -> None:
            if when > loop.time():
                asleep.add(check.name)
            pending[loop.create_task(run_at(check, when))] = (check, when)

        now = loop.time()  # a round the wake from a stall released: its checks spread after it
        base = now if due is None else WAKE.round_base(due, now, self.cadence)
        for check, offset in zip(self.checks, offsets, strict=True):
            launch(check, base + offset)
        failed = throttled = False
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: order[pending[t][0].name]):
                    check, started = pending.pop(task)
                    waiting.discard(check.name)
                    result = task.result()
                    if result.verdict:
                        heard.add(check.name)
                    failure = self._take_result(check, result)
                    if failure is not None:
                        failed, throttled = True, throttled or failure
                    if waiting:
                        launch(check, started + self.check_interval)
                if not waiting:  # the round is complete: what has not started yet waits
                    for task in [t for t, (c, _) in pending.items() if c.name in asleep]:
                        task.cancel()
                        del pending[task]
        finally:
            for task in pending:  # cancelled (halt, reload): the checks clean up first
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self.rounds += 1
        now = time.monotonic()
        self._expire_maintenance(now)
        # A round nerve could not see all through (a check without a verdict, the flag
        # unknown) proves nothing about a leftover: it does not count towards `rise`.
        blind = len(heard) < len(order) or self._flag_unknown
        passed = not failed and not blind
        self._fresh_round_done(round_start, now, passed, down=not self.state.healthy)
        if self.reporter.holding and not blind:  # on the reporter: a reload keeps it
            self.reporter.held_rounds += 1
        if self.state.registered or not self._flag_unknown:  # that flag may say "stay out"
            self._apply(self.state.settle(now), quiet_throttle=throttled)
        self._end_hold(failed=failed)

    def _take_result(self, check: Check, result: CheckResult) -> bool | None:
        """Count one result. None for a pass or no verdict; for a failure, whether a
        withdrawal it asked for was held back by the rate limit (already logged)."""
        if not result.verdict:
            self._skip_result(check, result)
            return None
        missed, _ = self.no_verdict.pop(check.name, (0, result))
        if missed:
            event(log, "check_verdict_back", service=self.name, check=check.name, missed=missed)
        self.last_results[check.name] = result
        record_check(self.metrics, self.name, check, result)
        self._tell_never_up(check, result)
        observation = Observation(check.name, result.ok, result.detail)
        if result.ok:
            self.state.count(observation)
            return None
        throttled = False
        decision = self.state.observe_failure(observation, time.monotonic())
        if decision is not None:
            throttled = decision.throttled and decision.transition is None
            self._apply(decision)
        self._end_hold(failed=True)
        return throttled

    def _tell_never_up(self, check: Check, result: CheckResult) -> None:
        fall, out = self.state.trackers[check.name].fall, bool(self.state.maintenance)
        told = self.never_up.observe(check.name, result.ok, result.detail, fall,
                                     self.state.registered, out)  # fmt: skip
        if told is not None:
            event(log, "service_not_registering", logging.WARNING, service=self.name, **told)

    def _skip_result(self, check: Check, result: CheckResult) -> None:
        """nerve could not probe (its own limits): nothing counted, nothing decided."""
        missed = self.no_verdict.get(check.name, (0, result))[0] + 1
        self.no_verdict[check.name] = (missed, result)
        if missed == 1:  # once per streak: at the open-file limit it may come every round
            detail = "not counted: the registration stays as it is"
            event(log, "check_no_verdict", logging.WARNING, service=self.name, check=check.name,
                  error=result.detail, detail=detail)  # fmt: skip
        record_no_verdict(self.metrics, self.name, check)

    def _verdict_fresh(self) -> bool:
        """For the reporter: whether a lost registration may be written back now."""
        now, freshness = time.monotonic(), self.freshness
        self._stall_seen(freshness.seen(now), "registration")
        freeze = silence_behind_loss(freshness.judged_from(), self.reporter, SILENCE)  # < limit
        if freshness.check(now) is None and freeze is not None:
            freshness.stall_at(freeze.length, freeze.end)
            self._stall_seen(freeze.length, "registration_lost")
        return freshness.check(now) is None

    def _fresh_round_done(self, started: float, ended: float, passed: bool, down: bool) -> None:
        stalled = self.freshness.stalled
        outcome = self.freshness.round_done(started, ended, passed, down)
        if outcome == "straddled" and stalled is None:
            self._stall_seen(self.freshness.stalled, "round_end")
        elif outcome in ("confirmed", "down", "expired"):
            event(log, "checks_fresh", service=self.name, after_stall_s=round(stalled or 0, 2),
                  ended=outcome)  # fmt: skip
            self.reporter.wake()  # a registration held back for this round may go now

    def _stall_seen(self, gap: float | None, seen_at: str) -> None:
        if gap is not None:
            event(log, "checks_stale", logging.WARNING, service=self.name, gap_s=round(gap, 2),
                  limit_s=round(self.freshness.limit, 2), seen_at=seen_at)  # fmt: skip

    def _end_hold(self, failed: bool) -> None:
        """While the reporter holds (no decision yet since the start, see Reporter.holding),
        a previous run's registration of this record stays, but only while nothing speaks
        against it: nobody vouches for a leftover, so a round in which any check failed or
        timed out withdraws it at once (not after ``fall``), as do ``rise`` rounds (the
        largest) without the service registering, counted since the start: a reload that
        only changed the checks continues the hold, never restarts it. Registering ends the
        hold through the transition; maintenance ends it at once (``_apply``)."""
        if not self.reporter.holding or self.state.registered:
            return
        rise = max((t.rise for t in self.state.trackers.values()), default=1)
        if failed or self.reporter.held_rounds >= rise:
            self.reporter.set_registered(False)

    def _load_flag(self, now: float) -> MaintenanceFlag | None:
        """The service's maintenance flag (None while nerve cannot read it). The first one
        read puts the service in maintenance: maintenance survives restarts and reloads. A
        stand-in for an unreadable file follows the file once it reads (its flag, or none)."""
        flag = self.store.load(self.name)
        if flag is UNKNOWN:
            return None  # read again next round; until then nothing changes
        reason = flag.reason if flag is not None else None
        if (self._flag_unknown or self._stand_in) and reason != self.state.maintenance.get(ADMIN):
            self._apply(self.state.set_maintenance(ADMIN, reason, now))
        self._flag_unknown, self._stand_in = False, flag is not None and flag.unreadable
        return flag

    def _expire_maintenance(self, now: float) -> None:
        self.store.retry(self.name)  # a flag file a full or read-only disk refused
        flag = self._load_flag(now)
        if flag is not None and self._maintenance_end.over(flag, now, time.time()):
            self.store.clear(self.name)
            event(log, "maintenance_expired", service=self.name, reason=flag.reason)
            self._apply(self.state.set_maintenance(ADMIN, None, now))
        if self.maintenance_file is not None:
            present = os.path.exists(self.maintenance_file)
            reason = f"{self.maintenance_file} exists" if present else None
            if (FILE in self.state.maintenance) != present:
                self._apply(self.state.set_maintenance(FILE, reason, now))

    # --- maintenance ------------------------------------------------------------------------

    def enter_maintenance(
        self, reason: str, duration: float | None = None
    ) -> MaintenanceFlag | None:
        """Withdraw now. A maintenance already in force (another operator's) is joined, not
        replaced (``MaintenanceFlag.joined``): returns that flag, else None. The stand-in for
        an unreadable flag file is replaced: it has no end, and joined, `--for` would not."""
        now = time.time()
        until = now + duration if duration else None
        current = self.store.load(self.name)
        joined = current if isinstance(current, MaintenanceFlag) else None
        more: dict[str, str] = {}
        if joined is not None and joined.unreadable:
            more["replaced"] = joined.reason
            joined = None
        elif joined is not None:
            # Timed as the rounds time it (a clock step since neither ends nor stretches it),
            # its end restated on today's wall clock so that the later end wins fairly.
            left = self._maintenance_end.left(joined, time.monotonic(), now)
            if left == 0.0:
                joined = None  # ran out; the next round would have ended it
            elif left is not None:
                joined = replace(joined, since=min(joined.since, now), until=now + left)
        flag = joined.joined(reason, until) if joined else MaintenanceFlag(reason, now, until)
        flag = self._maintenance_end.saved(flag, now)  # (a restart in this boot: its end true)
        self.store.save(self.name, flag)
        self._flag_unknown = False  # the operator's word replaces the flag file's
        if joined:
            more["joined"] = joined.reason
        event(log, "maintenance_on", service=self.name, reason=reason, until=flag.until, **more)
        self._apply(self.state.set_maintenance(ADMIN, flag.reason, time.monotonic()))
        return joined

    def leave_maintenance(self) -> MaintenanceFlag | None:
        """End the maintenance, every operator's who joined it; returns the flag ended."""
        current = self.store.load(self.name)
        ended = current if isinstance(current, MaintenanceFlag) else None
        self.store.clear(self.name)
        self._flag_unknown = False
        more = {"ended": ended.reason} if ended else {}
        event(log, "maintenance_off", service=self.name, **more)
        self._apply(self.state.set_maintenance(ADMIN, None, time.monotonic()))
        return ended

    # --- decisions ----------------------------------------------------------------------------

    def _apply(self, decision: Decision, quiet_throttle: bool = False) -> None:
        """``quiet_throttle``: the same held-back change was logged earlier this round."""
        if decision.throttled and not (quiet_throttle and decision.transition is None):
            event(
                log,
                "status_change_throttled",
                level=logging.WARNING,
                service=self.name,
                shadow_mode=decision.shadow,
                reason=self.state.reason(),
            )
            if self.metrics is not None:
                self.metrics.throttled.labels(self.name, str(decision.shadow).lower()).inc()
                self.metrics.statsd.incr("nerve", "service", self.name, "throttled")
        transition = decision.transition
        if transition is not None:
            to = "registered" if transition.registered else "withdrawn"
            level = logging.INFO if transition.registered else logging.WARNING
            event(log, f"service_{to}", level, service=self.name, reason=transition.reason)
            if self.metrics is not None:
                self.metrics.transitions.labels(self.name, to).inc()
                updown = "up" if transition.registered else "down"
                self.metrics.statsd.incr("nerve", "service", self.name, updown)
            self.reporter.set_registered(transition.registered)
        elif self.state.maintenance and self.reporter.holding:
            self.reporter.set_registered(False)  # maintenance withdraws at once
        if self.state.maintenance and self.predecessor is not None:
            self.predecessor.cut.set()  # ... a hand-over's old registration too
        self.publish_gauges()

    def publish_gauges(self) -> None:
        old = self.predecessor
        if old is not None and old.moved and not old.gone.is_set():
            return  # (a moved address rising: the old service, same name, stands till done)
        if self.metrics is not None:
            self.metrics.healthy.labels(self.name).set(1 if self.state.healthy else 0)
            self.metrics.maintenance.labels(self.name).set(1 if self.state.maintenance else 0)

    def status(self) -> dict[str, Any]:
        return service_status(self)
