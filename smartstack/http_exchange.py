"""One HTTP/1.1 request and its response on a connection of its own, on asyncio streams.

h11 does the framing (Content-Length, chunked, read-until-close, 1xx); this adds the
socket, TLS and error messages that name the peer. etcd's JSON gateway client
(``smartstack.etcd_http``) and nerve's HTTP checks use it: aiohttp's client would cost
each daemon ~10 MB of RSS and ~0.27 s of start for one request at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import h11

from smartstack import tcp_connect

READ_SIZE = 65536
# Keepalive probes on a long-lived stream's socket: idle seconds, seconds between probes,
# probes.
KEEPALIVE = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}


class HeadTooLarge(ConnectionError):
    """A response head over the exchange's ``max_head`` bytes."""


class Exchange:
    """One request and its response on one connection; ``peer`` names the other side in
    errors ("etcd", "the service"). A response head (status line and headers) over
    ``max_head`` bytes is refused (``HeadTooLarge``) however it was cut into reads."""

    peer = "the server"
    max_head = 16 * 1024  # h11's default

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.max_head)
        self._received = 0  # bytes given to h11 (a head's size: what it consumed of them)

    @classmethod
    async def open(
        cls, host: str, port: int, context: ssl.SSLContext | None, server_hostname: str | None = ""
    ) -> Exchange:
        """Connect (``host``'s addresses raced, its last ones kept: ``smartstack.tcp_connect``);
        with ``context``, TLS with ``server_hostname`` (default: ``host``; None: no SNI and
        no name to check)."""
        name = host if server_hostname == "" else server_hostname
        reader, writer = await tcp_connect.open_connection(host, port, context, name)
        return cls(reader, writer)

    def keepalive(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE.items():
            if hasattr(socket, option):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> h11.Response:
        """Send the request; the response's head once it came (1xx answers skipped)."""
        if body:
            headers = [*headers, ("Content-Length", str(len(body)))]
        data = self.http.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            data += self.http.send(h11.Data(data=body))
        data += self.http.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()
        while True:
            before = self._consumed()
            got = await self._next()
            # h11 refuses a head only while it is incomplete and its buffer over the limit:
            # one that came whole in one read would pass. Measured here, a head over the
            # limit fails whatever the segmentation.
            if self._consumed() - before > self.max_head:
                raise self._head_too_large()
            if isinstance(got, h11.Response):
                return got
            if not isinstance(got, h11.InformationalResponse):
                raise ConnectionError(f"{self.peer} sent {type(got).__name__} before a response")

    def _consumed(self) -> int:
        return self._received - len(self.http.trailing_data[0])

    def _head_too_large(self) -> HeadTooLarge:
        return HeadTooLarge(f"{self.peer}'s response head is over {self.max_head} bytes")

    async def _next(self) -> Any:
        while True:
            heading = self.http.their_state is h11.SEND_RESPONSE
            try:
                got = self.http.next_event()
                if got is h11.NEED_DATA:
                    data = await self.reader.read(READ_SIZE)
                    self._received += len(data)
                    self.http.receive_data(data)
                    continue
            except h11.RemoteProtocolError as exc:
                if heading and exc.error_status_hint == 431:  # an incomplete head too long
                    raise self._head_too_large() from exc
                raise ConnectionError(
                    f"{self.peer}'s HTTP response broke off: {_clipped(str(exc))}"
                ) from exc
            if isinstance(got, h11.ConnectionClosed):
                raise ConnectionError(f"{self.peer} closed the connection")
            return got

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body as it comes, until its end."""
        while not isinstance(got := await self._next(), h11.EndOfMessage):
            if isinstance(got, h11.Data):
                yield bytes(got.data)

    async def close(self) -> None:
        if self.http.their_state is not h11.DONE:
            # Cut short (a timeout, a cancellation, an error): aborted, not closed politely.
            # A polite TLS close waits for the peer's close_notify, which a hung peer never
            # sends (measured: a 0.5 s keep-alive to a wedged etcd member took 1.5 s).
            self.writer.transport.abort()
            return
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


def _clipped(text: str, most: int = 120) -> str:
    """h11's error quotes the bytes it choked on (a page's content, up to 512 of them): the
    kind of error stays, the quote is cut."""
    return text if len(text) <= most else text[:most] + "..."
