"""What a network check's probe is waiting on from its service, for its deadline to look at.

A check's timer that fires late cannot tell, on its own, a service whose answer sits unread
(nerve's loop did not run) from a service that never answered. So the probe's connect and
stream note here their socket, their reader and the loop time nerve sent what it now waits
on (the connect started, a request written: ``Inflight.sent``); when the deadline fires,
``Inflight.answered`` asks the kernel whether the answer is in. ``BaseCheck`` sets one
``Inflight`` per round in ``PROBE`` (a ContextVar: ``connect``, ``open_stream`` and the
writes find it without a parameter); with no probe set (a check's ``probe()`` called
directly) the notes are dropped.
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
        self.reader: asyncio.StreamReader | None = None
        self.connecting = False
        # Loop time of the connect or write the probe now waits on; None: it waits on
        # nothing from the service (the answer came: nerve's own steps follow).
        self.sent_at: float | None = None

    def sent(self, sock: socket.socket | None = None, *, connecting: bool = False) -> None:
        """nerve has just asked the service something (a connect, a request, a TLS hello):
        the service's ``timeout`` counts from now, however late the loop was before."""
        if sock is not None:
            self.sock = sock
        self.connecting = connecting
        self.sent_at = asyncio.get_running_loop().time()

    def got_answer(self, reader: asyncio.StreamReader | None = None) -> None:
        """The service answered (the connect, the handshake): nerve's own steps follow."""
        if reader is not None:
            self.reader = reader
        self.connecting = False
        self.sent_at = None

    def answered(self) -> bool | None:
        """Whether the service has answered what it was last asked, read by the probe or
        not; None when the probe opened no socket (exec, noop, a name lookup): unknown."""
        if self.sock is None:
            return None
        if self.sent_at is None:
            return True
        if self.reader is not None and _unread(self.reader):
            return True
        # A connect in progress is answered once writable (connected or refused); a
        # connected socket once readable (data, EOF or a reset; TLS: encrypted bytes).
        return _ready(self.sock, select.POLLOUT if self.connecting else select.POLLIN)


PROBE: contextvars.ContextVar[Inflight | None] = contextvars.ContextVar(
    "nerve_check_probe", default=None
)


def current() -> Inflight:
    """The round's Inflight; outside a check's round, one that nobody reads."""
    return PROBE.get() or Inflight()


class SentWriter(asyncio.StreamWriter):
    """A stream writer whose every write starts the service's time (HTTP request, Redis
    PING, AMQP header: what the probe then reads the answer to)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        current().sent()


def _unread(reader: asyncio.StreamReader) -> bool:
    # Read from the socket by the transport, not yet by the probe (its task is due to run).
    # StreamReader has no public size of its buffer.
    return (
        bool(getattr(reader, "_buffer", b"")) or reader.at_eof() or reader.exception() is not None
    )


def _ready(sock: socket.socket, events: int) -> bool:
    fd = sock.fileno()
    if fd < 0:  # closed
        return False
    poller = select.poll()  # not select.select: nerve's descriptors may pass FD_SETSIZE
    poller.register(fd, events)
    return bool(poller.poll(0))
