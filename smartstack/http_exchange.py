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


class Exchange:
    """One request and its response on one connection; ``peer`` names the other side in
    errors ("etcd", "the service")."""

    peer = "the server"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)

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
            got = await self._next()
            if isinstance(got, h11.Response):
                return got
            if not isinstance(got, h11.InformationalResponse):
                raise ConnectionError(f"{self.peer} sent {type(got).__name__} before a response")

    async def _next(self) -> Any:
        while True:
            try:
                got = self.http.next_event()
                if got is h11.NEED_DATA:
                    self.http.receive_data(await self.reader.read(READ_SIZE))
                    continue
            except h11.RemoteProtocolError as exc:
                raise ConnectionError(f"{self.peer}'s HTTP response broke off: {exc}") from exc
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
