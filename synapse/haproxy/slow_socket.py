"""A read that connected but got no answer in time (``is_slow``: a worker alive but stalled,
frozen by a paused container, a VM stall, swapping) is no lost socket: a reload would
not help it and hurts (its new worker cannot take the listeners from the stalled one, binds
its own, and the connections queued on the old ones are reset when it resumes: 32 of 60
in-flight requests in review s25). The apply then ends with the error (``RunningState.
runtime_slow``: the controller plans nothing) and the sweep tries again once a second, so
the change goes in as soon as the worker answers; only after SLOW_LIMIT of slowness in a
row is it taken for hung for good (a reload, as for a lost socket).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Sequence

from smartstack.logs import event
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError, SocketUnavailable, Unanswered

log = logging.getLogger("synapse.haproxy")

# Slow in a row this long (reads that connected, no answer in time): hung for good, a
# reload. Stalls of a live worker (a paused container, a VM migration or stall, a swap
# storm) last seconds to tens of seconds, and an apply under one takes 10-16 s of
# timeouts, so 60 s leaves it ~4 tries; a worker hung for good holds changes back no
# longer than that (HAProxy's own watchdog ends one spinning on a CPU; a frozen one not).
SLOW_LIMIT = 60.0


def is_slow(error: HAProxySocketError, elapsed: float, timeout: float) -> bool:
    """Whether a read failed as on a live but stalled HAProxy: it connected and waited
    the whole ``timeout`` for an answer (``elapsed``: how long the read took), rather
    than the socket being gone (no such file, refused, closed: a reload or restart
    recreates it) or HAProxy answering wrong."""
    if not isinstance(error, SocketUnavailable):
        return False  # (an answer came: a refused command, an unexpected answer)
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.errno == errno.EAGAIN:
        return True  # its listen queue is full: nobody accepts (connections queued meanwhile)
    if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
        return False  # refused, no such file, reset: nothing listens there
    return elapsed >= 0.9 * timeout  # (a quick "no answer": HAProxy closed the connection)


class SlowSocket:
    """How long the admin socket has been slow in a row; a mixin of ``RunningReader``
    (its ``runtime``, ``runtime_error``, ``_clock``, ``_suspect``, ``_kick``)."""

    runtime: list[RuntimeClient]
    runtime_error: str | None
    slow_since: float | None
    _recovered: bool
    _clock: Callable[[], float]
    _suspect: bool
    _kick: asyncio.Event

    def read_failed(self, error: HAProxySocketError, elapsed: float) -> bool:
        """A read failed after ``elapsed`` seconds: /health says why. True: HAProxy is
        slow (``is_slow``), for less than SLOW_LIMIT in a row: no reload (the controller),
        and the sweep tries again within a second (the change goes in once it answers)."""
        self.runtime_error = str(error)
        if not self.runtime or not is_slow(error, elapsed, self.runtime[0].timeout):
            self.slow_since = None
            return False
        return self.slow(str(error), elapsed)

    async def stalled(self, since: float) -> bool:
        """Before a reload: HAProxy answered nothing here since ``since`` (its apply planned
        on the trusted view, a structural change, and sent nothing), so its worker may be
        stalled unnoticed, and a reload into it hurts: it is asked `show info` once. True:
        slow (``read_failed``) for less than SLOW_LIMIT in a row, no reload now (the sweep
        retries). An answer, or a gone socket (refused, no such file: HAProxy crashed, a
        reload or start recreates it): False, the reload goes ahead. A wait that already
        met the timeout in this apply, after its last answer (a stall that began after the
        apply's read: the edge's `show map`), is that slowness: not asked again."""
        if not self.runtime:
            return False
        client = self.runtime[0]
        missed = client.unanswered_at >= max(since, client.answered_at)
        if client.answered_at >= since and not missed:
            return False
        if (slow := self.slow_for()) is not None and slow >= SLOW_LIMIT:
            return False  # (this apply's read found it hung for good: no wait more)
        if missed and client.unanswered is not None:
            self.runtime_error = client.unanswered
            return self.slow(client.unanswered, client.timeout)
        began = time.monotonic()
        try:
            await self.runtime[0].info()
        except HAProxySocketError as err:
            return self.read_failed(err, time.monotonic() - began)
        self.answered()
        return False

    def commands_failed(self, failures: Sequence[str], elapsed: float) -> bool:
        """Runtime commands failed after ``elapsed`` seconds: True when HAProxy is slow
        (a command got no answer, after the whole timeout: ``is_slow``), for less than
        SLOW_LIMIT in a row (the apply then ends, as after a slow read). A command sent
        to a stalled worker runs when it resumes: the next apply reads first (the view
        is invalid) and plans again once more if a command fails (``take_recovered``).
        Told by type (``Unanswered``: a batch cut short, `prompt` unanswered), never by
        the wording: an answer is no slowness."""
        lost = [failure for failure in failures if isinstance(failure, Unanswered)]
        if not lost or not self.runtime or elapsed < 0.9 * self.runtime[0].timeout:
            return False
        self.runtime_error = lost[0]
        return self.slow(lost[0], elapsed)

    def slow(self, error: str, waited: float) -> bool:
        """HAProxy connected but did not answer in the ``waited`` seconds: whether it has
        been slow for less than SLOW_LIMIT in a row (counted from the first such wait's
        start); the sweep tries again within a second."""
        now = self._clock()
        if self.slow_since is None:
            self.slow_since = now - waited
            event(log, "haproxy_runtime_slow", level=logging.WARNING, error=error,
                  detail=f"connected, no answer in time: no reload for {SLOW_LIMIT:.0f} s, "
                  "the change goes in once HAProxy answers")  # fmt: skip
        self._suspect = True  # the sweep tries again once a second
        self._kick.set()
        return now - self.slow_since < SLOW_LIMIT

    def answered(self) -> None:
        """A read succeeded: the socket answers (again)."""
        if self.slow_since is not None:
            self._recovered = True
            event(log, "haproxy_runtime_answers", level=logging.WARNING,
                  slow_s=round(self._clock() - self.slow_since, 1))  # fmt: skip
        self.runtime_error = self.slow_since = None

    def take_recovered(self) -> bool:
        """Whether HAProxy answered again after being slow since the last call: commands
        sent during the stall may run only now (a failed `add server`: the server exists),
        so a command failing is planned again once, on a new read (the controller)."""
        recovered, self._recovered = self._recovered, False
        return recovered

    def slow_for(self) -> float | None:
        """Seconds the admin socket has been slow in a row (None: it is not)."""
        return None if self.slow_since is None else self._clock() - self.slow_since
