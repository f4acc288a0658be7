"""Addresses synapse looks up itself for servers whose host is a DNS name.

HAProxy 2.6 resolves such a server (``init-addr libc``) while it parses the config, one
name after another, each lookup as long as glibc makes it: with a resolver that does not
answer, 20 s per name (5 s x 2 tries, A and AAAA). Every candidate check (``haproxy -c``)
then outlived ``reload_timeout`` (no verdict: no reload of any service, retried for as long
as the outage lasted) and a start or a restart from the file took 20 s per name with
nothing served. And ``init-addr last`` took the server-state file's address first at every
reload: a name whose address changed was never followed.

So synapse looks the names up here, on at most WORKERS daemon threads (at most one lookup
at a time per name: a lookup that hangs costs a thread, never the loop), waits at most
``SETTLE_WAIT`` for names it has no answer for yet, and renders ``init-addr <address>``
(``renew`` sets ``Server.address``, ``hosts.added_init_addr`` adds it); with no answer,
``init-addr last,none``: HAProxy never asks DNS.
An answer is looked up again every ``REFRESH_SECONDS``; one that changed calls
``on_change`` (the controller applies again: ``set server addr`` at the new address where
the server had one, else a reload; ``planner``). A lookup
that fails keeps the last good answer, except a definite "no such name".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import queue
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from smartstack import logs
from synapse.haproxy.hosts import is_ip
from synapse.identity import moved

if TYPE_CHECKING:
    from synapse.model import DesiredService, Server

SETTLE_WAIT = 1.0  # seconds a render waits for names it has no answer for yet
WORKERS = 16  # lookups at a time (a silent resolver holds each for 20 s; answers keep)
COALESCE_S = 0.1  # changed answers wait this for the others of their batch (one apply)
REFRESH_SECONDS = 30.0  # a changed DNS record is followed within this (`set server addr`)
_GONE = (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
log = logging.getLogger("synapse.haproxy.dns")


class DnsAddresses:
    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._answers: dict[str, str] = {}  # name -> the address rendered
        self._asked: dict[str, float] = {}  # name -> when its last lookup began
        self._inflight: dict[str, threading.Event] = {}
        self._wanted: set[str] = set()  # the names of the last settle (refreshed)
        self._on_change: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # on_change's, held until done
        self._refresher: asyncio.Task[None] | None = None
        self._queue: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._workers = 0  # lookup threads started (at most WORKERS)
        self._scanned: list[DesiredService] = []  # the last list names() looked at
        self._names_by: list[frozenset[str]] = []  # its services' DNS names, by position
        self._generation = 0  # counts the answers that changed (renew's reuse is void)
        self._renewed: tuple[int, list[DesiredService], list[DesiredService]] = (-1, [], [])

    def address(self, host: str) -> str | None:
        """The address to render for ``host`` (a dict read: never a lookup)."""
        return self._answers.get(host)

    async def settle(self, hosts: Iterable[str], wait: float = SETTLE_WAIT) -> None:
        """Start the lookups ``hosts`` need; wait at most ``wait`` for those of them never
        answered (an answer that comes later calls ``on_change``)."""
        hosts = set(hosts)
        self._wanted = hosts
        now = time.monotonic()
        pending = []
        with self._lock:
            for host in hosts:
                if host in self._inflight:  # (one that hangs is waited for once only)
                    continue
                if now - self._asked.get(host, -1e9) >= self.refresh_seconds:
                    event = self._start(host, now)
                    if host not in self._answers:
                        pending.append(event)
        deadline = now + wait
        for event in pending:  # (polled: daemon threads; the loop's pool is joined at exit)
            while not event.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

    def names(self, desired: Sequence[DesiredService]) -> set[str]:
        """The servers' hosts that are DNS names. A service handed over as the same object
        as last time is not looked at again: a scan of every server cost 7-10 ms an apply
        at 1,000 services x 20 (review s33), where an apply is ~1 ms."""
        old = self._scanned
        if len(desired) == len(old):
            by = list(self._names_by)
            for i in moved(desired, old):
                by[i] = _names_of(desired[i])
        else:
            by = [_names_of(service) for service in desired]
        self._scanned, self._names_by = list(desired), by
        return set().union(*by)

    async def resolved(self, desired: list[DesiredService]) -> list[DesiredService]:
        """``desired`` with its DNS names looked up (``settle``) and rendered (``renew``)."""
        await self.settle(self.names(desired))
        return self.renew(desired)

    def renew(self, desired: list[DesiredService]) -> list[DesiredService]:
        """``desired`` with each DNS-named server's ``address`` set to the answer (new
        objects where it changed: the renderer reuses what equals its last render)."""
        if not self._wanted:  # (no DNS-named server in the last settle: the common case)
            return desired
        self.names(desired)  # (the same list as the settle's: nothing scanned again)
        generation = self._generation  # (read first: an answer changing meanwhile voids it)
        last_generation, last_in, last_out = self._renewed
        reuse = generation == last_generation and len(desired) == len(last_in)
        renewed = list(desired)
        for i, named in enumerate(self._names_by):
            if not named:
                continue
            service = desired[i]
            # a service handed over as the same object as last time (the reconciler's, or
            # the one renewed then), no answer changed since: last time's (an apply renewed
            # every DNS-named server: 130 ms at 1,000 x 20 named hosts, review s33)
            if reuse and (service is last_in[i] or service is last_out[i]):
                renewed[i] = last_out[i]
                continue
            servers = [self._with_address(server) for server in service.servers]
            if any(map(operator.is_not, servers, service.servers)):
                renewed[i] = dataclasses.replace(service, servers=servers)
        self._renewed = (generation, list(desired), renewed)
        return renewed

    def _with_address(self, server: Server) -> Server:
        if is_ip(server.host):
            return server
        address = self._answers.get(server.host, "")
        return server if server.address == address else dataclasses.replace(server, address=address)

    def start(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Follow changed answers: ``on_change`` runs on the loop when one changed."""
        loop = asyncio.get_running_loop()

        # Answers that change together (the first ones after a start, a refresh of many
        # names) call on_change once, not once each: 2,000 names answered were 2,000
        # applies in a row (a 1.1 s stall of the loop, review s33). One runs at a time and
        # runs again if an answer changed since it began.
        dirty = [False]

        async def drain() -> None:
            await asyncio.sleep(COALESCE_S)  # (the answers of one refresh come together)
            while dirty[0]:
                dirty[0] = False
                await on_change()

        def run() -> None:
            already = dirty[0] or any(not t.done() for t in self._tasks)
            dirty[0] = True
            if already:  # (the running one goes round again)
                return
            task = loop.create_task(drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._on_change = lambda: loop.call_soon_threadsafe(run)
        if self._refresher is None or self._refresher.get_loop() is not loop:  # (a new run)
            self._refresher = asyncio.create_task(self._refresh())

    async def stop(self) -> None:
        self._on_change = None
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            if self._wanted:
                await self.settle(self._wanted, wait=0)

    def _start(self, host: str, now: float) -> threading.Event:
        event = self._inflight[host] = threading.Event()
        self._asked[host] = now
        self._queue.put((host, event))  # (a put: a thread started per name took 0.45 ms
        while self._workers < min(WORKERS, self._queue.qsize()):  # of the loop each: 0.9 s
            self._workers += 1  # at 2,000 names every refresh, review s33)
            threading.Thread(target=self._work, daemon=True, name="dns-lookup").start()
        return event

    def _work(self) -> None:
        while True:  # (daemon threads: a lookup hung in glibc never holds up an exit)
            self._lookup(*self._queue.get())

    def _lookup(self, host: str, event: threading.Event) -> None:
        try:
            found = [a[4][0] for a in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
        except (OSError, UnicodeError) as exc:
            gone = isinstance(exc, socket.gaierror) and exc.errno in _GONE
            found = [] if gone else None  # (None: no verdict, the last answer stays)
        with self._lock:
            del self._inflight[host]
            before = self._answers.get(host)
            if found is not None:
                # the same address while it is still among the answers (round-robin DNS
                # reorders them: a reload at each lookup otherwise)
                chosen = before if before in found else (found[0] if found else None)
                if chosen is None:
                    self._answers.pop(host, None)
                else:
                    self._answers[host] = chosen
            after = self._answers.get(host)
            changed = after != before
            if changed:
                self._generation += 1
        if changed and before is not None:  # (a first answer is no news: 2,000 at a start)
            logs.event(log, "dns_answer_changed", host=host, before=before, after=after or "none")
        event.set()
        notify = self._on_change
        if changed and notify is not None:
            with contextlib.suppress(RuntimeError):  # (the loop is closed: nobody cares)
                notify()


def _names_of(service: DesiredService) -> frozenset[str]:
    return frozenset(s.host for s in service.servers if not is_ip(s.host))


ADDRESSES = DnsAddresses()  # process-wide, as the names and the renderer are
