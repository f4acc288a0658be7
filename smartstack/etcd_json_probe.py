"""A status probe of the member that carries the JSON gateway's watches.

A watch on the gateway is one long HTTP response, silent while nothing changes. A member
that stops answering without closing anything (SIGSTOP, a stalled host: its kernel still
acknowledges, so TCP keepalive is content) leaves the watch silent too, and only the
watcher's two-minute consistency check would notice: a withdrawal not applied meanwhile
(measured: a withdrawn instance's 503s served for 56 s). gRPC notices such a stream when a
watch creation goes unanswered, probes the member's status and abandons the stream with
its watches (``smartstack.etcd_watch``, ``EtcdConnection._endpoint_trouble``). Here, while
a connection has watches, ``/v3/maintenance/status`` goes to their member every
``PROBE_INTERVAL`` s; no answer within ``MISSES * PROBE_TIMEOUT`` s on the connection
kept for the probes (a second call on a new connection after ``PROBE_TIMEOUT`` s only
hears a failing member sooner), or a member failure (5xx, 429), moves the connection
to the next endpoint, which fails the watches made on that member: their watchers list and
watch anew there. One miss is not enough: on a lossy link it is a lost packet, and giving up
the member for it cost every watch a relist (300 ms RTT, 20 % loss: 5 watches lost a
minute, each back after 1.7-5.5 s). One small request per connection and interval,
whatever the number of watches, on one kept-alive HTTP/1.1 connection (no TCP or TLS
handshake per probe).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from smartstack.etcd_http import HttpStatusError, KeptLine, Target

PROBE_INTERVAL = 2.0  # seconds between probes while the connection has watches
PROBE_TIMEOUT = 1.5  # etcd answers status from memory, in about a millisecond
MISSES = 2  # PROBE_TIMEOUTs a status call may take before the member is given up
STATUS_PATH = "/v3/maintenance/status"


class WatchProbe:
    """Probes the member a connection's watches are on, for as long as it has any.

    ``where()``: the endpoint to probe (no auth: etcd answers status to anyone) and the
    connection's turn on it; ``silent(reason, turn)``: the member did not answer (the
    connection moves on from that turn, failing its watches); ``watching()``: whether a
    watch is still live."""

    def __init__(
        self,
        where: Callable[[], tuple[Target, object]],
        silent: Callable[[str, object], Awaitable[None]],
        watching: Callable[[], bool],
    ) -> None:
        self._where, self._silent, self._watching = where, silent, watching
        self._line = KeptLine()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """A watch was made: probe until none is left (one task per connection)."""
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            while self._watching():
                await asyncio.sleep(PROBE_INTERVAL)
                if self._watching():
                    await self.probe()
        finally:
            await self._line.close()

    async def probe(self) -> None:
        """One probe; the connection moves on when the member does not answer the status
        call within ``MISSES * PROBE_TIMEOUT`` s (on a lossy link its answer may merely
        be late: its packet sent again), or says it failed, or refuses the connection."""
        try:
            target, turn = self._where()
        except (ConnectionError, OSError):
            # The TLS files cannot be loaded now (a renewal under way): the member's health
            # is unknown, not bad, and the watches' connections are up. The next tick tries
            # again; the connection's next call logs why (etcd_tls_failed).
            return
        trouble = await self._trouble(target)
        if trouble is not None:
            await self._silent(f"status probe of the watched member: {trouble}", turn)

    async def _trouble(self, target: Target) -> str | None:
        """What is wrong with the member (None: nothing). A call still unanswered after
        PROBE_TIMEOUT gets a second beside it, on a new connection: a member that fails or
        refuses says so at once. Only the first one's answer keeps the member: it went on the
        connection kept from one probe to the next, as the watches' own streams are, and a
        NAT or proxy that froze open flows still passes new ones (the watches were then never
        left: 3 s before the second call existed)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + PROBE_TIMEOUT * MISSES
        first = asyncio.ensure_future(self._ask(target))
        asks = [first]
        try:
            done, _ = await asyncio.wait(asks, timeout=PROBE_TIMEOUT)
            if not done:
                asks.append(asyncio.ensure_future(self._ask(target)))
                done, _ = await asyncio.wait(asks, timeout=end - loop.time(),
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if first in done:
                return first.result()
            if not done:
                return f"no answer in {PROBE_TIMEOUT * MISSES:g} s"
            failed = done.pop().result()  # the second call's
            if failed is not None:
                return failed  # a member failure, a refused connection
            await asyncio.wait([first], timeout=max(0.0, end - loop.time()))
            if first.done():
                return first.result()
            return f"a new connection is answered, the kept one not in {PROBE_TIMEOUT * MISSES:g} s"
        finally:
            for task in asks:
                task.cancel()
            await asyncio.gather(*asks, return_exceptions=True)

    async def _ask(self, target: Target) -> str | None:
        """What is wrong with the member, from one status call (None: nothing). A second
        call while the first waits goes on a connection of its own (``KeptLine``)."""
        try:
            await self._line.post(target, STATUS_PATH, {})
            return None
        except HttpStatusError as exc:
            if not exc.member_failed:
                return None  # an answer: the member is there
            return f"HTTP {exc.status}: {exc.message[:120]}"
        except (ConnectionError, OSError) as exc:
            return f"{type(exc).__name__}: {str(exc)[:120]}"

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._line.close()
