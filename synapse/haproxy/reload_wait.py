"""How long a managed reload is waited for: ``reload_timeout``, and longer while HAProxy's
master shows it is still at work on it.

A reload re-executes the master, which parses the whole config before it answers on its
socket again, then forks the new worker, which takes the listeners over. On a starved CPU
(a cgroup quota, a loaded host) that outlasts ``reload_timeout``: 500 services with
HAProxy held to 1 ms of CPU per 100 ms took 10.3-13 s. Declared failed at 10 s, the
previous config file went back while HAProxy loaded the new one a moment later; the retry
found the master busy (a second failure, "Connection reset by peer") and reloaded it once
more for nothing, and a crash meanwhile would have restarted HAProxy on the old file.

So past the deadline the wait goes on, up to SLOW_FACTOR times ``reload_timeout``, while
the master process lives and says the reload is under way: no answer (it re-executes), or
its reload counter past the one before the reload and no failure (the new worker forks, or
takes the listeners over). HAProxy 2.6's `show proc` `[failed: N]` counts the failed
reloads since the last good one: every re-execution adds 1 to the reload counter, and sets
N to 0 when the config loaded (before the new worker serves), N + 1 when it did not (0 [0]
-> bad 1 [1] -> bad 2 [2] -> good 3 [0]). So, once the counter moved, N above 0 is this
reload failed (at once), 0 is this reload loaded. A master that answers as it did before
the reload (the command was lost) fails at the deadline, as before.

"No answer" is re-executing only while the master runs: its CPU time (/proc) grew within
the last ``reload_timeout`` and it is not stopped (SIGSTOP, a debugger). A stopped or hung
master's socket also goes unanswered (the kernel queues the connection, nothing reads it):
it was waited for 6 times as long, said to be "re-executing"; it fails at the deadline now.
And no look at a socket outlasts the wait (a stopped process's socket held each one for
the socket timeout, 5 s: a 2 s reload_timeout failed after 5.1 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from smartstack.logs import event
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.pids import cpu
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError, SocketUnavailable

T = TypeVar("T")

log = logging.getLogger("synapse.haproxy.managed")

SLOW_FACTOR = 6  # the longest wait for a reload under way, in reload_timeouts
MIN_LOOK = 0.1  # seconds a look at a socket may take at least (the deadline is near)


def under_way(alive: bool, proc: ProcInfo | None, baseline: ProcInfo, runs: bool = True) -> bool:
    """Whether the master is still at the reload begun at ``baseline`` (its `show proc`
    then); ``proc``: its last answer (None: it did not answer); ``runs``: it ran lately."""
    if not alive:
        return False
    if proc is None:
        return runs  # re-executing: it parses the config before it answers again
    # (not "as many failures as before": after a failed reload, the baseline's N is 1)
    return proc.reloads > baseline.reloads and proc.failed_reloads == 0


def failed(proc: ProcInfo, baseline: ProcInfo) -> bool:
    """Whether the master re-executed since ``baseline`` and could not load the config."""
    return proc.reloads > baseline.reloads and proc.failed_reloads > 0


class ReloadWait:
    """The deadline of one wait for a new worker (``baseline`` None: a start, never
    extended); ``proc`` is set to each answer of the master (None when it did not answer);
    ``master``: its pid, whose CPU time says whether it runs."""

    def __init__(self, timeout: float, baseline: ProcInfo | None, master: int | None = None):
        self.began = time.monotonic()
        self.timeout, self.baseline = timeout, baseline
        self.proc: ProcInfo | None = None
        self.stuck = ""  # why a master that does not answer is not waited for (logged once)
        self._said = False
        self._master = master if baseline is not None else None
        self._ticks: int | None = None  # its CPU time when last looked at
        self._ran = self.began  # when it last grew
        self._runs()

    @property
    def waited(self) -> float:
        return round(time.monotonic() - self.began, 1)

    @property
    def left(self) -> float:
        """Seconds until the wait ends at the latest, as it stands (a look's bound)."""
        waited = time.monotonic() - self.began
        end = self.timeout if waited < self.timeout else self.timeout * SLOW_FACTOR
        return max(end - waited, MIN_LOOK)

    def _runs(self) -> bool:
        """Whether the master ran within the last ``timeout`` and is not stopped."""
        seen = cpu(self._master) if self._master is not None else None
        if seen is None:
            return False
        state, ticks = seen
        now = time.monotonic()
        if self._ticks is not None and ticks != self._ticks:
            self._ran = now
        self._ticks = ticks
        return state not in "tT" and now - self._ran < self.timeout

    def goes_on(self, alive: bool) -> bool:
        """Whether to look again (``alive``: the master process runs)."""
        waited = time.monotonic() - self.began
        runs = self._runs()  # (every look: when it last ran counts)
        if waited < self.timeout:
            return True
        if self.baseline is None or waited >= self.timeout * SLOW_FACTOR:
            return False
        if not under_way(alive, self.proc, self.baseline, runs):
            if self.proc is None and alive:
                self.stuck = "; its master gets no CPU (stopped or hung): not waited for"
            return False
        if not self._said:
            self._said = True
            doing = "re-executing" if self.proc is None else "starting its new worker"
            event(log, "haproxy_reload_slow", level=logging.WARNING,
                  waited_s=round(waited, 1), master=doing,
                  detail=f"the reload is under way: waited for up to "
                  f"{self.timeout * SLOW_FACTOR:g}s")  # fmt: skip
        return True

    async def ask(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` (a look at a socket), cut at what is left of the wait
        (SocketUnavailable): a stopped process's socket takes the connection, never answers."""
        try:
            async with asyncio.timeout(self.left):
                return await call()
        except TimeoutError as err:
            raise SocketUnavailable("no answer before the deadline") from err


async def serves(runtime: RuntimeClient | None, worker: int, wait: ReloadWait) -> bool:
    """The admin socket is answered by ``worker`` (it has taken the listeners over)."""
    if runtime is None:
        return True
    try:
        return (await wait.ask(runtime.info)).get("Pid") == str(worker)
    except HAProxySocketError:
        return False
