"""What a network check's probe is waiting on from its service, for its deadline to look at.

A check's timer that fires late cannot tell, on its own, a service whose answer sits unread
(nerve's loop did not run) from a service that never answered. So the probe's connect and
stream note here their socket, their reader and the loop time nerve sent what it now waits
on (the connect started, the TLS hello, a request written: ``Inflight.sent``); when the
deadline fires, ``Inflight.answered`` says whether the service has done its part: bytes
in that the probe has not been given the chance to read (in the kernel or in the
reader's buffer), a connect or TLS handshake completed, or an answer read that the probe
is now handling (nerve's own steps). A probe waiting on the rest of a reply it has
already looked at is waiting on the service: a service that sent part of a reply and
hangs is not "answered". ``BaseCheck`` sets one ``Inflight`` per round in ``PROBE`` (a
ContextVar: ``connect`` and ``open_stream`` find it without a parameter; the stream's
reader, writer and protocol keep it, since the loop's callbacks run outside the task's
context); with no probe set (a check's ``probe()`` called directly) the notes are dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import socket


class Inflight:
    """One round's socket and stream, and when nerve last asked the service something."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.reader: NotedReader | None = None
        self.connecting = False
        # Loop time of the connect, hello or write the probe now waits on; None: it waits
        # on nothing from the service (connected: nerve's own steps follow).
        self.sent_at: float | None = None
        # Bytes (or EOF, or an error) came from the service since ``sent_at``.
        self.heard = False

    def sent(self, sock: socket.socket | None = None, *, connecting: bool = False) -> None:
        """nerve has just asked the service something (a connect, a request, a TLS hello)."""
        if sock is not None:
            self.sock = sock
        self.connecting = connecting
        self.heard = False
        self.sent_at = asyncio.get_running_loop().time()

    def got_answer(self) -> None:
        """The service answered (the connect, the handshake): nerve's own steps follow."""
        self.connecting = False
        self.sent_at = None

    def answered(self) -> bool | None:
        """Whether the service has done what it was last asked, and nerve's loop is the one
        to move; None when the probe opened no socket (exec, noop, a name lookup): unknown."""
        if self.sock is None:
            return None
        reader = self.reader
        if self.sent_at is None or (reader is not None and reader.fresh):
            return True
        if self.heard and (reader is None or not reader.waiting):
            return True  # the probe has its answer and is handling it
        # Waiting on the service: answered only by bytes the transport has not read yet.
        # A connect in progress is answered once writable (connected or refused); a
        # connected socket once readable (data, EOF or a reset; TLS: encrypted bytes).
        return _ready(self.sock, select.POLLOUT if self.connecting else select.POLLIN)


PROBE: contextvars.ContextVar[Inflight | None] = contextvars.ContextVar(
    "nerve_check_probe", default=None
)


def current() -> Inflight:
    """The round's Inflight; outside a check's round, one that nobody reads."""
    return PROBE.get() or Inflight()


class NotedReader(asyncio.StreamReader):
    """A StreamReader that knows whether the probe has looked at what came in: ``fresh``
    (bytes, EOF or an error arrived since the probe last looked at its buffer) and
    ``waiting`` (the probe looked and waits for more)."""

    def __init__(self, probe: Inflight, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self.probe = probe
        self.fresh = False
        self.waiting = False

    def _arrived(self) -> None:
        self.fresh = True
        self.probe.heard = True

    def feed_data(self, data: bytes) -> None:
        super().feed_data(data)
        if data:
            self._arrived()

    def feed_eof(self) -> None:
        super().feed_eof()
        self._arrived()

    def set_exception(self, exc: BaseException) -> None:
        super().set_exception(exc)
        self._arrived()

    async def _wait_for_data(self, func_name: str) -> None:
        # Every read of StreamReader (read, readline, readuntil, readexactly) waits here
        # once the buffer it looked at is not enough (CPython 3.8-3.13).
        self.fresh = False
        self.waiting = True
        try:
            await super()._wait_for_data(func_name)
        finally:
            self.waiting = False


class NotedProtocol(asyncio.StreamReaderProtocol):
    """Notes the connection made (for TLS: the handshake done) when the loop makes it,
    before the probe's task resumes; keeps the transport for an abort."""

    def __init__(self, reader: NotedReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self.noted, self.probe = reader, reader.probe
        self.made: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = transport  # type: ignore[assignment]
        super().connection_made(transport)
        self.probe.reader = self.noted
        self.probe.got_answer()


class SentWriter(asyncio.StreamWriter):
    """A stream writer whose every write starts the service's time (HTTP request, Redis
    PING, AMQP header: what the probe then reads the answer to)."""

    def __init__(self, probe: Inflight, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.probe = probe

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        self.probe.sent()


def _ready(sock: socket.socket, events: int) -> bool:
    fd = sock.fileno()
    if fd < 0:  # closed
        return False
    poller = select.poll()  # not select.select: nerve's descriptors may pass FD_SETSIZE
    poller.register(fd, events)
    return bool(poller.poll(0))
