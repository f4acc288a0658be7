"""What every health check shares: the result type, the protocol and the timeout cut.

A check only has to implement ``probe()``: return ``Passed(detail)`` on success or raise
``CheckFailed`` (any other exception also counts as a failure, except nerve's own lack of
file descriptors, memory or processes: that gives no verdict, see ``no_verdict``).
``BaseCheck.run`` measures the latency, cuts the probe at the check's own ``timeout`` and
never raises, so a hanging check can never hold up anything but its own result. The cut
waits while nerve's own loop runs late (``_Deadline``): a loop that could not read the
service's answer in time gives no verdict, for up to MAX_BLIND_S: a loop late for longer is
a nerve that cannot vouch for anything, and its starved rounds count as failures from then on
(a hung service behind a loop that stays late is withdrawn in bounded time).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from nerve.own_limits import at_own_limit

MAX_DETAIL = 512  # /status and log lines stay readable
# A check's timer that fires this much late means the process did not run (a container's
# CPU quota throttled it, a GC pause, SIGSTOP, 500 checks due in one tick): what the service
# answered meanwhile waits unread. The probe then gets LATE_GRACE to read it, again and again
# while the grace's own timer fires late too: the timeout counts only after a grace the loop
# kept. After LATE_CAP of that the check gives no verdict (nerve starved, not the service),
# until the check has gone MAX_BLIND_S without one: a hung service cannot be told from a
# starved loop (with no verdict every round it stayed registered for a minute), and failing
# the second starved round withdrew hundreds of healthy services at once. MAX_BLIND_S is a
# ZooKeeper session's usual timeout: a frozen nerve's registrations go after about as long.
LATE_SLACK = 0.02  # seconds
LATE_GRACE = 0.05  # seconds
LATE_CAP = 1.0  # seconds past the timeout
STARVED = "nerve's event loop ran late all through the check"
MAX_BLIND_S = 10.0  # seconds of starved rounds a check gives no verdict for
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
        try:
            async with asyncio.timeout(None) as cut:
                deadline = _Deadline(loop, cut, started + self.timeout)
                try:
                    passed = await self.probe()
                finally:
                    deadline.cancel()
        except TimeoutError:
            timed_out = f"timed out after {self.timeout:g}s"
            if deadline.starved:  # nerve never could read an answer
                if self._blind_since is None:
                    self._blind_since = started
                blind = loop.time() - self._blind_since
                if blind < MAX_BLIND_S:
                    return self._result(False, STARVED, started, verdict=False)
                starved = STARVED_TOO_LONG.format(blind)  # a bounded blind spot, then failures
                return self._result(False, f"{timed_out} {starved}", started)
            return self._result(False, timed_out, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a check must never take its service loop down
            if no_verdict(exc):
                return self._result(False, describe_error(exc), started, verdict=False)
            output = exc.output if isinstance(exc, CheckFailed) else None
            return self._result(False, describe_error(exc), started, output)
        return self._result(True, passed.detail, started, passed.output)

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


class _Deadline:
    """Expires ``cut`` at ``when``, unless the process itself was not running then: a
    stalled loop must not fail every check in flight (with fall 1, withdraw healthy
    services) for an answer that arrived in time and sat unread. Late, it waits a grace
    and looks again; it cuts once a grace fired on time (the loop ran: what the service
    sent was read), or gives up after LATE_CAP (``starved``: see ``BaseCheck.run``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, cut: asyncio.Timeout, when: float):
        self._loop, self._cut = loop, cut
        self._cap = when + LATE_CAP
        self.starved = False
        self._handle = loop.call_at(when, self._fire, when)

    def _fire(self, due: float) -> None:
        now = self._loop.time()
        if now - due > LATE_SLACK:  # the loop was late, not (only) the service
            if now < self._cap:
                grace = now + LATE_GRACE
                self._handle = self._loop.call_at(grace, self._fire, grace)
                return
            self.starved = True
        self._cut.reschedule(now)  # expires: the probe is cancelled, TimeoutError

    def cancel(self) -> None:
        self._handle.cancel()
