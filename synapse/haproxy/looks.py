"""Looks at HAProxy's servers from outside the applies (``/health/<service>``, zone_health):
shared, and answered from the reader's view, marked stale, when the admin socket fails.

Each look used to open a CLI connection of its own. HAProxy serves only so many at once
(past ~20 it dropped the others): 60 health checkers polling together got half their
answers as false 503s, and synapse's own reads failed beside them. So looks that arrive
together share one read: the one in flight when it covers them, else the next one, which
takes every backend asked meanwhile (one connection, one round trip); a read less than
FRESH_FOR old answers a probe without asking again. A socket error is tried once more, then the
look answers from what the reader last read (``Labels.stale`` says so), for at most
STALE_LIMIT after the socket stopped answering, and the reader is told (``on_failure``):
/health says so at once, and it reads whole (a reload recreates a lost socket) now.

A socket that connects and stays silent (a stopped or stalled worker) costs each try its
timeout (5 s): a look used to wait both (10 s: a checker's `curl --max-time 1` failed),
and the stale answers counted from their end (200 for 20 s of a frozen HAProxy, /health
200 for the first 10 s while every request failed). So a probe's look waits for PROBE_WAIT of
silence at most (the read goes on; past it, AWAKE_WAIT), the stale clock runs from
the first unanswered ask, and /health counts a read unanswered for LATE_LIMIT (``late``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence

from smartstack.tasks import cancel_and_wait
from synapse.haproxy.running import RunningServer
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.view import RunningView

# A health checker polling every second still sees HAProxy's own check take a server down
# within 0.2 s, and a burst of any size costs HAProxy one connection per 0.2 s. (Runtime
# commands synapse sends do not wait for it: they change the view's counter, see ``_fresh``.)
FRESH_FOR = 0.2
RETRY_PAUSE = 0.05  # seconds before the second try: HAProxy freeing a connection slot
# Seconds the reader's view answers for a socket that does not: a lost socket is back
# after the reload the reader does at once (~1 s); longer, HAProxy itself is likely gone.
STALE_LIMIT = 10.0
PROBE_WAIT = 0.5  # seconds a look waits for HAProxy's answer; then the view's, marked stale
AWAKE_WAIT = 0.05  # seconds a look waits once HAProxy has been silent PROBE_WAIT
LATE_LIMIT = 2.0  # seconds a read may go unanswered before /health says so (``late``)
# A read of this many backends or more, holding at least WHOLE_SHARE of the servers HAProxy
# has, asks one `show servers state` of every backend, not one per backend: 1,000 stranded
# services of 4 servers, 6 ms of synapse's CPU and 4 of HAProxy's, not 9 and 7 (review s39,
# read_cost.py); 100 of 1,000 backends, one per backend: 0.9 ms, not 4.
WHOLE_FROM = 32
WHOLE_SHARE = 0.5


class Labels(dict[str, str]):
    """{server: state label} of one backend; ``stale``: why this is what synapse last read
    rather than HAProxy's answer now (None: HAProxy's answer)."""

    def __init__(self, servers: Mapping[str, str], stale: str | None = None) -> None:
        super().__init__(servers)
        self.stale = stale


Answer = Labels | None  # None: HAProxy has no such backend (or its state is unknown)
_Read = asyncio.Task[dict[str, Answer]]  # one read: {backend asked: its answer}


class Looks:
    def __init__(
        self,
        runtime: Sequence[RuntimeClient],
        view: RunningView | None,
        on_failure: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        first = runtime[0] if runtime else None
        # A client of its own, a connection per read: the applies hold theirs (two tasks
        # must not read one connection at once).
        self.client = first and RuntimeClient(first.path, first.timeout)
        self._view, self._on_failure, self._clock = view, on_failure, clock
        self._answers: dict[str, tuple[float, int, Answer]] = {}  # (read at, counter, answer)
        self._flight: tuple[set[str], int, _Read] | None = None
        self._queued: tuple[set[str], _Read] | None = None
        self._silent_since: float | None = None  # (clock) the first ask not answered began
        self._flight_at = 0.0  # (clock) the read in flight began
        self.reads = 0  # reads sent to HAProxy: for tests

    async def servers_of(self, backends: Sequence[str], probe: bool = False) -> dict[str, Answer]:
        """{backend: its servers' labels} (see the module docstring); ``probe`` (a health
        checker's: /health/<service>) waits for HAProxy PROBE_WAIT at most and may be
        answered from a read under FRESH_FOR old. Others (zone health, a start's adoption)
        wait for a read that began after they asked, or the one in flight: zone health
        looks every FAST_S (0.1 s) while a service is stranded, and a 0.2 s cache answered
        every other look (review s38: 15 reads in 3 s, one per 0.2 s)."""
        if self.client is None or self._view is None:  # no runtime socket: nothing to ask
            return dict.fromkeys(backends)
        found = {b: self._answers[b][2] for b in backends if probe and self._fresh(b)}
        missing = set(backends) - found.keys()
        if missing:
            # From the read's own result, not the cache: a runtime command during the read
            # makes its answers not fresh, and pruning could drop them (every look a 503).
            # (PROBE_WAIT of silence in all; then AWAKE_WAIT: a HAProxy back answers in it.
            # Silence is a read in flight unanswered: a read that failed and none since
            # (socket missing for a moment at a reload) left the next probe, 10 s later,
            # 0.05 s for a healthy HAProxy, and a 503 (past STALE_LIMIT) on a late answer.)
            flight = self._flight
            asking = flight is not None and not flight[2].done()
            since = self._silent_since if asking else None
            read = self._round(missing)
            silent = 0.0 if since is None else self._clock() - since
            wait = max(AWAKE_WAIT, PROBE_WAIT - silent) if probe else None
            try:  # (shielded: a caller gone or answered stale, others still wait for it)
                got = await asyncio.wait_for(asyncio.shield(read), wait)
            except TimeoutError:
                got = self._last_read(missing, f"no answer in {PROBE_WAIT} s")
            found |= {b: got.get(b) for b in missing}
        return {b: found[b] for b in backends}

    async def stop(self) -> None:
        """Cancel the reads in flight or queued (synapse stops: their callers too)."""
        for part in (self._flight, self._queued):
            await cancel_and_wait(part[-1] if part is not None else None)
        self._flight = self._queued = None

    def late(self) -> str | None:
        """For /health: why HAProxy is silent, while the read in flight has gone unanswered
        LATE_LIMIT (one that failed: the reader was told, ``on_failure``)."""
        flight = self._flight
        if flight is None or flight[2].done():
            return None
        silent = self._clock() - self._flight_at
        if silent < LATE_LIMIT:
            return None
        return f"no answer to a look at its servers for {silent:.1f} s"

    def _fresh(self, backend: str) -> bool:
        """Read under FRESH_FOR ago, and no runtime command, reload or read changed the
        view since (a look right after an apply sees what it did)."""
        assert self._view is not None
        at, counter, _ = self._answers.get(backend, (-FRESH_FOR, -1, None))
        return self._clock() - at < FRESH_FOR and counter == self._view.counter

    def _round(self, missing: set[str]) -> _Read:
        """The read that brings ``missing``: the one in flight, or the next one."""
        assert self._view is not None
        flight = self._flight
        if flight is not None and not flight[2].done():
            backends, counter, task = flight
            if missing <= backends and counter == self._view.counter:
                return task
        if self._queued is None or self._queued[1].done():  # (done: cancelled at a stop)
            before = flight[2] if flight is not None else None
            queued: set[str] = set()
            self._queued = (queued, asyncio.create_task(self._read_after(before, queued)))
        self._queued[0].update(missing)
        return self._queued[1]

    async def _read_after(self, before: _Read | None, backends: set[str]) -> dict[str, Answer]:
        if before is not None:
            await asyncio.wait([before])  # (its outcome is its callers')
        assert self._view is not None and self._queued is not None
        counter, (_, task) = self._view.counter, self._queued
        self._flight, self._queued = (backends, counter, task), None
        self._flight_at = self._clock()
        found = await self._read(sorted(backends))
        at = self._clock()
        for backend, answer in found.items():
            self._answers[backend] = (at, counter, answer)
        if len(self._answers) > 4 * len(backends) + 64:  # (backends gone: forget them)
            kept = self._answers.items()
            self._answers = {b: a for b, a in kept if b in found or self._fresh(b)}
        return found

    async def _read(self, backends: list[str]) -> dict[str, Answer]:
        """HAProxy's answer, tried twice; else the view's, marked stale (``_last_read``)."""
        assert self.client is not None
        error = ""
        if self._silent_since is None:
            self._silent_since = self._clock()
        for attempt in range(2):
            try:
                self.reads += 1
                found = await self.client.read_labels(backends, self._whole(backends))
            except HAProxySocketError as err:
                error = str(err)
                if not attempt:
                    await asyncio.sleep(RETRY_PAUSE)
                continue
            except BaseException:
                self._silent_since = None  # (not HAProxy's silence: a stop, a bug)
                raise
            self._silent_since = None
            return {b: None if (got := found.get(b)) is None else Labels(got) for b in backends}
        self._on_failure(error)
        return self._last_read(backends, error)

    def _whole(self, backends: Collection[str]) -> bool:
        """Whether one whole `show servers state` answers ``backends`` for less (WHOLE_FROM)."""
        if len(backends) < WHOLE_FROM:
            return False
        assert self._view is not None
        known = self._view.backends
        asked = sum(len(known.get(b) or ()) for b in backends)
        return asked >= WHOLE_SHARE * sum(len(servers or ()) for servers in known.values())

    def _last_read(self, backends: Collection[str], error: str) -> dict[str, Answer]:
        """What the reader last read of ``backends``, before a reload too (None: not known,
        new at a reload, or the socket has not answered for over STALE_LIMIT)."""
        assert self._view is not None
        now = self._clock()
        failing = now - (now if self._silent_since is None else self._silent_since)
        if failing > STALE_LIMIT:
            return dict.fromkeys(backends)
        why = (f"HAProxy's admin socket does not answer ({error[:200]}): the states synapse "
               f"last read (the socket failing for {failing:.1f} s)")  # fmt: skip
        found: dict[str, Answer] = {}
        for backend in backends:
            # Not read from the process a reload started yet: the states read before it
            # (it loads them from the state file). Unknown was a 503 for a probe whose read
            # took over PROBE_WAIT right after a reload (review s36); new backends stay so.
            servers, unread = self._view.backends.get(backend), backend in self._view.unread
            known = servers is not None and not (unread and not servers)
            note = f"{why}, from before HAProxy's reload" if unread else why
            found[backend] = Labels(_labels(servers) or {}, note) if known else None
        return found


def _labels(servers: Mapping[str, RunningServer] | None) -> Labels | None:
    if servers is None:
        return None
    return Labels({name: server.label for name, server in sorted(servers.items())})
