"""What every health check shares: the result type, the protocol and the timeout cut.

A check only has to implement ``probe()``: return ``Passed(detail)`` on success or raise
``CheckFailed`` (any other exception also counts as a failure, except nerve's own lack of
file descriptors, memory or processes: that gives no verdict, see ``no_verdict``).
``BaseCheck.run`` measures the latency, cuts the probe at the check's own ``timeout`` and
never raises, so a hanging check can never hold up anything but its own result. The cut
blames the service, not nerve's own loop running late (``_Deadline``, ``decide``): a network
check's probe notes its socket and when it sent what it waits on (``inflight``), and when
the timer fires it looks whether the service has done its part (bytes in that the probe has
not had the chance to read, a connect or handshake done, an answer the probe is handling).
A loop that keeps time cuts the whole check at ``timeout`` (one grace for an answer that
came at that moment). A loop that ran late gives the service its whole ``timeout`` from
nerve's last send; no answer by then is a failure, however late the loop. Answered but
unread while the loop stays late: graces up to LATE_CAP, then no verdict. A check without
a socket (exec, noop) has only the loop's lateness to go by: a loop late all through it
gives no verdict (STARVED). Unread and starved rounds give no verdict for at most
MAX_BLIND_S, then fail (a hung command, or a service that sent part of an answer, cannot be
told from a starved loop).
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from nerve.checks.inflight import PROBE, Inflight
from nerve.own_limits import at_own_limit, own_limit_hint

MAX_DETAIL = 512  # /status and log lines stay readable
# A check's timer that fires this much late means the process did not run (a container's
# CPU quota throttled it, a GC pause, SIGSTOP, 500 checks due in one tick): what the service
# answered meanwhile may wait unread. A network check looks (``decide``): an answer in gets
# LATE_GRACE to be read, again and again while the loop stays late, for up to LATE_CAP
# past the service's deadline, then no verdict (UNREAD); no answer after the service's
# whole timeout is a failure. A check with no socket to look at gets the grace while its
# timer fires late, up to LATE_CAP, then no verdict (STARVED). Either gives no verdict until
# the check has gone MAX_BLIND_S without one, then failures: a hung command, or a service
# that sent part of its answer, cannot be told from a starved loop. MAX_BLIND_S is a
# ZooKeeper session's usual timeout: a frozen nerve's registrations go after about as long.
LATE_SLACK = 0.02  # seconds
LATE_GRACE = 0.05  # seconds
LATE_CAP = 1.0  # seconds past the timeout
STARVED = "nerve's event loop ran late all through the check"
UNREAD = "the service answered, but nerve's event loop ran too late to read it"
MAX_BLIND_S = 10.0  # seconds of starved or unread rounds a check gives no verdict for
STARVED_TOO_LONG = "(nerve's event loop ran late all through its checks for {:.0f}s)"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency: float  # seconds
    output: str | None = None  # exec checks: what the command printed
    at: float = 0.0  # wall clock (time.time()) when the check finished
    # False: nerve could not probe (see no_verdict); ``ok`` then says nothing.
    verdict: bool = True


class Check(Protocol):
    name: str
    type: str
    timeout: float

    async def run(self) -> CheckResult: ...

    async def close(self) -> None: ...


class Passed(NamedTuple):
    detail: str
    output: str | None = None


class CheckFailed(Exception):
    """The service answered, but not the way a healthy one does."""

    def __init__(self, detail: str, output: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.output = output


class NoVerdict(Exception):
    """nerve itself could not probe (e.g. an exec check that could not fork)."""


def no_verdict(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is nerve's own lack of resources: it
    says nothing about the service, and counted as a failure it withdrew healthy services
    whenever nerve hit its open-file limit."""
    cause: BaseException | None = exc
    for _ in range(3):  # an exception, and the one or two it was raised from
        if cause is None:
            return False
        if isinstance(cause, NoVerdict) or at_own_limit(cause):
            return True
        cause = cause.__cause__
    return False


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    text = " ".join(text.split())  # one line, whatever the service printed
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, CheckFailed):
        return exc.detail
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class BaseCheck:
    """Runs ``probe()`` under the check's own timeout and turns the outcome into a result."""

    type = "base"
    _blind_since: float | None = None  # loop time the current run of starved rounds began

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout

    async def probe(self) -> Passed:
        raise NotImplementedError

    async def run(self) -> CheckResult:
        result = await self._run()
        if result.verdict:
            self._blind_since = None
        return result

    async def _run(self) -> CheckResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        probe = Inflight()
        try:
            async with asyncio.timeout(None) as cut:
                deadline = _Deadline(loop, cut, started, self.timeout, probe)
                try:
                    passed = await self._probe_noted(probe)
                finally:
                    deadline.cancel()
        except TimeoutError:
            timed_out = f"timed out after {self.timeout:g}s"
            if deadline.step in (Step.UNREAD, Step.STARVED):  # nerve could not read it
                # No verdict for at most MAX_BLIND_S of such rounds: a service that sent
                # part of its answer and hangs looks the same as a loop that stays late.
                if self._blind_since is None:
                    self._blind_since = started
                blind = loop.time() - self._blind_since
                why = UNREAD if deadline.step is Step.UNREAD else STARVED
                if blind < MAX_BLIND_S:
                    return self._result(False, why, started, verdict=False)
                starved = STARVED_TOO_LONG.format(blind)  # a bounded blind spot, then failures
                return self._result(False, f"{timed_out} {starved}", started)
            return self._result(False, timed_out, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a check must never take its service loop down
            if no_verdict(exc):
                hint = own_limit_hint(exc)
                detail = describe_error(exc) + (f" ({hint})" if hint else "")
                return self._result(False, detail, started, verdict=False)
            output = exc.output if isinstance(exc, CheckFailed) else None
            return self._result(False, describe_error(exc), started, output)
        return self._result(True, passed.detail, started, passed.output)

    async def _probe_noted(self, probe: Inflight) -> Passed:
        """``probe()`` with ``probe`` as the round's ``inflight.PROBE``."""
        token = PROBE.set(probe)
        try:
            return await self.probe()
        finally:
            PROBE.reset(token)

    def _result(
        self,
        ok: bool,
        detail: str,
        started: float,
        output: str | None = None,
        verdict: bool = True,
    ) -> CheckResult:
        latency = asyncio.get_running_loop().time() - started
        return CheckResult(ok, clip(detail), latency, output, time.time(), verdict)

    async def close(self) -> None:
        """Release what the check holds (nothing by default)."""


class Step(enum.Enum):
    """What a check's deadline does when its timer fires (``decide``)."""

    GRACE = "look again shortly: an answer is in, or the loop is late"
    WAIT = "look again when the service has had its whole timeout"
    CUT = "cut the probe: the service's timeout, a verdict"
    UNREAD = "cut the probe: an answer nerve could not read, no verdict"
    STARVED = "cut the probe: a loop late all through, nothing known of the service"


def decide(
    now: float,
    due: float,
    deadline: float,
    timeout: float,
    answered: bool | None,
    sent_at: float | None,
    was_late: bool = False,
) -> tuple[Step, float]:
    """The step (and when to look again) for a deadline timer due at ``due`` that fires at
    ``now`` (loop times): ``deadline`` is the round's start plus ``timeout``; ``answered``
    and ``sent_at`` are the probe's (``Inflight``; None: no socket to look at);
    ``was_late``: an earlier timer of the round fired late."""
    late = now - due > LATE_SLACK
    if answered is None:  # no socket: only the loop's lateness to go by
        if not late:
            return Step.CUT, now
        return (Step.GRACE, now + LATE_GRACE) if now < deadline + LATE_CAP else (Step.STARVED, now)
    # The service's time: the round's deadline, exactly, while the loop keeps time. A loop
    # that ran late (now or at an earlier look) may have sent late: the service then has
    # its whole timeout from what nerve sent last (the loop's delay is not the service's).
    owed = deadline
    if (late or was_late) and sent_at is not None:
        owed = max(deadline, sent_at + timeout)
    if not answered:
        return (Step.WAIT, owed) if now < owed else (Step.CUT, now)
    if not late:  # answered, the loop keeps time: it reads the answer within a grace
        return (Step.GRACE, now + LATE_GRACE) if now < owed + LATE_GRACE else (Step.CUT, now)
    # Answered, the loop too late to read it: graces while it stays late, up to LATE_CAP,
    # then no verdict (such rounds count towards MAX_BLIND_S: see ``BaseCheck._run``).
    if now < owed + LATE_CAP:
        return Step.GRACE, now + LATE_GRACE
    return Step.UNREAD, now


class _Deadline:
    """Expires ``cut`` when ``decide`` says so: a stalled loop must not fail a check (with
    fall 1, withdraw a healthy service) for an answer that arrived in time and sat unread,
    nor keep a hung service registered because the loop was late."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        cut: asyncio.Timeout,
        started: float,
        timeout: float,
        probe: Inflight,
    ):
        self._loop, self._cut, self._probe = loop, cut, probe
        self._deadline, self._timeout = started + timeout, timeout
        self.step = Step.WAIT
        self._was_late = False
        self._handle = loop.call_at(self._deadline, self._fire, self._deadline)

    def _fire(self, due: float) -> None:
        try:
            now = self._loop.time()
            probe = self._probe
            step, at = decide(
                now,
                due,
                self._deadline,
                self._timeout,
                probe.answered(),
                probe.sent_at,
                self._was_late,
            )
            self._was_late = self._was_late or now - due > LATE_SLACK
        except Exception:  # never a probe uncut for ever: the timeout, as without a look
            step, at = Step.CUT, self._loop.time()
        self.step = step
        if step in (Step.GRACE, Step.WAIT):
            self._handle = self._loop.call_at(at, self._fire, at)
            return
        self._cut.reschedule(self._loop.time())  # expires: the probe is cancelled

    def cancel(self) -> None:
        self._handle.cancel()
