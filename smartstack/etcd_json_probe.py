"""A status probe of the member that carries the JSON gateway's watches.

A watch on the gateway is one long HTTP response, silent while nothing changes. A member
that stops answering without closing anything (SIGSTOP, a stalled host: its kernel still
acknowledges, so TCP keepalive is content) leaves the watch silent too, and only the
watcher's two-minute consistency check would notice: a withdrawal not applied meanwhile
(measured: a withdrawn instance's 503s served for 56 s). gRPC notices such a stream when a
watch creation goes unanswered, probes the member's status and abandons the stream with
its watches (``smartstack.etcd_watch``, ``EtcdConnection._endpoint_trouble``). Here, while
a connection has watches, ``/v3/maintenance/status`` goes to their member every
``PROBE_INTERVAL`` s; no answer within ``PROBE_TIMEOUT`` s (or a member failure: 5xx, 429)
moves the connection to the next endpoint, which fails the watches made on that member:
their watchers list and watch anew there. One small request per connection and interval,
whatever the number of watches, on one kept-alive HTTP/1.1 connection (no TCP or TLS
handshake per probe).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import h11

from smartstack.etcd_http import Exchange, HttpStatusError, Target

PROBE_INTERVAL = 2.0  # seconds between probes while the connection has watches
PROBE_TIMEOUT = 1.5  # etcd answers status from memory, in about a millisecond
STATUS_PATH = "/v3/maintenance/status"


class StatusLine:
    """``/v3/maintenance/status`` on a connection kept from one call to the next."""

    def __init__(self) -> None:
        self._exchange: Exchange | None = None
        self._peer: tuple[str, int, int] | None = None

    async def ask(self, target: Target) -> dict:
        """The member's status (HttpStatusError when it refuses)."""
        peer = (target.host, target.port, id(target.context))
        kept, self._exchange = self._exchange, None
        if kept is not None and self._peer == peer:
            try:
                return await self._once(kept, target)
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    raise
                # etcd closed the idle connection meanwhile: a new one, in the same time.
        elif kept is not None:
            await kept.close()
        self._peer = peer
        return await self._once(await Exchange.open(target.host, target.port, target.context),
                                target)  # fmt: skip

    async def _once(self, exchange: Exchange, target: Target) -> dict:
        try:
            status = await exchange.post(target.host, STATUS_PATH, {}, target.headers)
            body = await exchange.body()
        except BaseException:
            await exchange.close()  # cut short: aborted
            raise
        http = exchange.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE:
            http.start_next_cycle()
            self._exchange = exchange
        else:
            await exchange.close()  # etcd said it closes it
        if status != 200:
            raise HttpStatusError(status, body)
        return body

    async def close(self) -> None:
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()


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
        self._line = StatusLine()
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
        """One probe; the connection moves on when the member does not answer."""
        try:
            target, turn = self._where()
        except (ConnectionError, OSError):
            # The TLS files cannot be loaded now (a renewal under way): the member's health
            # is unknown, not bad, and the watches' connections are up. The next tick tries
            # again; the connection's next call logs why (etcd_tls_failed).
            return
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._line.ask(target)
            return
        except HttpStatusError as exc:
            if not exc.member_failed:
                return  # an answer: the member is there
            trouble = f"HTTP {exc.status}: {exc.message[:120]}"
        except TimeoutError:
            trouble = f"no answer in {PROBE_TIMEOUT} s"
        except (ConnectionError, OSError) as exc:
            trouble = f"{type(exc).__name__}: {str(exc)[:120]}"
        await self._silent(f"status probe of the watched member: {trouble}", turn)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._line.close()
