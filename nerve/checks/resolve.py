"""Name lookups and connects for the network checks (tcp, redis, rabbitmq, http).

asyncio resolves in the loop's default thread pool, and a timeout cancels the wait but
not the lookup: a check host whose DNS hangs filled that pool round after round, until
another service's lookup of ``localhost`` could not get a thread within its timeout (a
healthy service withdrawn), and ``asyncio.run`` waited for the stuck threads at exit.

Here a name is looked up at most once at a time per (host, port): a round that times out
leaves the lookup running, and later rounds await the same one. Each lookup runs on a
daemon thread of its own (their number is bounded by the checks' distinct names in
flight; a ThreadPoolExecutor's workers are joined at interpreter exit even after
``shutdown(wait=False)``). An answer is kept ``CACHE_SECONDS``; an IP literal is never
looked up. The check connects to the addresses found, in order, as
``loop.create_connection`` does.

When the answer has expired, a lookup that has not answered within ``STALE_WAIT`` (one
lost UDP packet costs glibc its whole ``timeout``, 5 s) or answers "try again" gives the
last good answer instead, up to ``STALE_MAX`` old: a name that resolves must not withdraw
a healthy service because one query was lost (a definite "no such name" is not masked).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import ssl
import threading
import time
from typing import Any

from nerve.checks import inflight

AddrInfo = tuple[int, int, int, tuple]  # family, type, proto, sockaddr
CACHE_SECONDS = 5.0  # a changed DNS record is followed within this
STALE_WAIT = 0.2  # seconds a refresh may take before the last good answer is used
STALE_MAX = 60.0  # the oldest last good answer used while DNS does not answer


class Resolver:
    """Process-wide (loop-agnostic: the in-flight lookup is a concurrent future)."""

    def __init__(self, cache_seconds: float = CACHE_SECONDS) -> None:
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, int], concurrent.futures.Future[list[AddrInfo]]] = {}
        self._cache: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}

    async def resolve(self, host: str, port: int) -> list[AddrInfo]:
        numeric = _numeric(host, port)
        if numeric is not None:
            return numeric
        key = (host, port)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
            lookup = self._inflight.get(key)
            if lookup is None:
                lookup = self._start(key)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[list[AddrInfo]] = loop.create_future()
        # A round cut by its timeout leaves its waiter unawaited: its failure is marked as
        # seen (else "Future exception was never retrieved", once per such round, at GC).
        waiter.add_done_callback(lambda w: w.cancelled() or w.exception())
        lookup.add_done_callback(lambda done: _hand_over(loop, done, waiter))
        # Shielded: this round's timeout must not cancel the lookup the next round awaits.
        stale = cached is not None and now - cached[0] < STALE_MAX - self.cache_seconds
        if not stale:
            return await asyncio.shield(waiter)
        assert cached is not None
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), STALE_WAIT)
        except TimeoutError:
            return cached[1]  # (the refresh goes on, for a later round)
        except socket.gaierror as exc:
            if exc.errno != socket.EAI_AGAIN:
                raise
            return cached[1]

    def _start(self, key: tuple[str, int]) -> concurrent.futures.Future[list[AddrInfo]]:
        lookup: concurrent.futures.Future[list[AddrInfo]] = concurrent.futures.Future()
        lookup.set_running_or_notify_cancel()  # cannot be cancelled from now on
        self._inflight[key] = lookup
        thread = threading.Thread(
            target=self._lookup, args=(key, lookup), name=f"resolve-{key[0]}", daemon=True
        )
        thread.start()
        return lookup

    def _lookup(self, key: tuple[str, int], lookup: concurrent.futures.Future[list[AddrInfo]]):
        try:
            found = socket.getaddrinfo(key[0], key[1], type=socket.SOCK_STREAM)
        except BaseException as exc:
            with self._lock:
                self._inflight.pop(key, None)
            lookup.set_exception(exc)
            return
        answer = [(family, kind, proto, addr) for family, kind, proto, _, addr in found]
        with self._lock:
            self._inflight.pop(key, None)
            if self.cache_seconds > 0:
                self._cache[key] = (time.monotonic() + self.cache_seconds, answer)
        lookup.set_result(answer)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._inflight)


def _hand_over(
    loop: asyncio.AbstractEventLoop,
    done: concurrent.futures.Future[list[AddrInfo]],
    waiter: asyncio.Future[list[AddrInfo]],
) -> None:
    """The lookup's outcome to one awaiting loop (from the lookup's thread)."""

    def copy() -> None:
        if waiter.done():
            return
        exc = done.exception()
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(done.result())

    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(copy)


def _numeric(host: str, port: int) -> list[AddrInfo] | None:
    """An IP literal's address, without a lookup (AI_NUMERICHOST never asks DNS)."""
    try:
        found = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
    except (socket.gaierror, UnicodeError):
        return None
    return [(family, kind, proto, addr) for family, kind, proto, _, addr in found]


RESOLVER = Resolver()


async def connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to the first address of ``host`` that accepts."""
    loop = asyncio.get_running_loop()
    errors: list[OSError] = []
    for family, kind, proto, addr in await RESOLVER.resolve(host, port):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            inflight.current().sent(sock, connecting=True)
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        inflight.current().got_answer()
        return sock
    if not errors:
        raise OSError(f"{host} has no address")
    if len({str(exc) for exc in errors}) == 1:
        raise errors[0]
    raise OSError("Multiple exceptions: " + ", ".join(str(exc) for exc in errors))


async def open_stream(
    host: str, port: int, context: ssl.SSLContext | None = None, server_hostname: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` through the checks' resolver; with ``context``, TLS
    with ``server_hostname`` as SNI (the name, though the connect went to its address).
    Its writes and reader are noted in the round's ``inflight.Inflight``."""
    sock = await connect(host, port)
    loop = asyncio.get_running_loop()
    probe = inflight.current()
    protocol = inflight.NotedProtocol(inflight.NotedReader(probe, loop), loop)
    owned = False  # asyncio's transport has the socket: it closes it on a failure

    def made() -> inflight.NotedProtocol:
        nonlocal owned
        owned = True
        if context is not None:  # the TLS hello goes out in the loop's next callbacks
            loop.call_soon(probe.sent)  # (a loop late now must not count as the service's)
        return protocol

    # "" = no SNI (an address): asyncio wants a name when it has no host of its own.
    tls: dict[str, Any] = (
        {} if context is None else {"ssl": context, "server_hostname": server_hostname or ""}
    )
    try:
        if context is not None:
            probe.sent()  # the handshake waits on the service
        transport, _ = await loop.create_connection(made, sock=sock, **tls)
    except BaseException:
        if protocol.made is not None:  # connected (TLS: handshake done), the task cut since
            protocol.made.abort()  # not a close_notify nobody may answer
        elif not owned:  # closing it under a live transport would free its fd for reuse
            with contextlib.suppress(OSError):
                sock.close()
        raise
    return protocol.noted, inflight.SentWriter(probe, transport, protocol, protocol.noted, loop)
