"""A proxy before one etcd member (127.0.0.1) that answers as a failing member does.

Run in the test's event loop. ``mode`` is read per new connection: ``"pass"`` forwards
bytes both ways; ``"504"``, ``"500"``, ``"429"`` answer that status with the JSON body
etcd's gateway writes for gRPC's DeadlineExceeded, Unknown and ResourceExhausted.
``counts`` holds the requests seen, by ``"<mode> <path>"``. ``fail(mode)`` also cuts the
connections passing unary calls (nerve keeps its keep-alives' connection open): their next
call meets the failure, as on a real member; watch streams are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

ERRORS = {
    "504": (504, "Gateway Timeout", 4, "context deadline exceeded"),
    "500": (500, "Internal Server Error", 2, "etcdserver: internal error"),
    "429": (429, "Too Many Requests", 8, "etcdserver: too many requests"),
}


class ErrorProxy:
    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.mode = "pass"
        self.counts: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._passing: dict[asyncio.StreamWriter, str] = {}  # open connections: first path

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> ErrorProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    def fail(self, mode: str) -> None:
        """Answer ``mode`` from now on, on the open connections of unary calls too."""
        self.mode = mode
        for writer, path in list(self._passing.items()):
            if path != "/v3/watch":
                writer.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            mode = self.mode
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            self.counts[f"{mode} {path}"] += 1
            if mode == "pass":
                self._passing[writer] = path
                await self._forward(head, reader, writer)
            else:
                await self._refuse(mode, head, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._passing.pop(writer, None)
            writer.close()

    async def _forward(self, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:  # fmt: skip
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        up_writer.write(head)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    @staticmethod
    async def _refuse(mode: str, head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:  # fmt: skip
        status, reason, code, message = ERRORS[mode]
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":", 1)[1]))
        body = json.dumps({"error": message, "code": code, "message": message}).encode()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(Exception):
            dst.close()
