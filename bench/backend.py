"""A small HTTP/1.1 keep-alive server for load tests: `python -m bench.backend --port P`.

Answers every GET with its name (``/health`` too); ``GET /slow`` after SLOW_S, as a long
request (a keep-alive connection answers in order); ``GET /ready`` (a readiness check for
HAProxy's ``option httpchk``) after READY_SLOW_S from a SIGUSR1 until a SIGUSR2, as when
a dependency of every instance turns slow (nerve's ``/health`` stays fast). asyncio
protocols, no framework: one process per backend keeps up with wrk through HAProxy on 2
cores, where the thread-per-request HttpBackend would be the bottleneck. SIGTERM is a
graceful stop: the listening socket closes at once (new connections are refused),
requests in flight are answered, idle keep-alive connections are closed, then the
process exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

_open: set[_Http] = set()
SLOW_S = 2.0  # GET /slow: how long its answer takes
READY_SLOW_S = 1.5  # GET /ready between a SIGUSR1 and a SIGUSR2
_ready_delay = 0.0  # GET /ready's now


class _Http(asyncio.Protocol):
    def __init__(self, body: bytes) -> None:
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        self.closing_response = self.response.replace(
            b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1
        )
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.stopping = False
        self.waiting = 0  # delayed answers not sent yet
        self.due = 0.0  # when the last delayed answer goes (loop time)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        _open.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _open.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        # GET requests only: every request ends with an empty line.
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            request, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            close = b"connection: close" in request.lower()
            delay = _delay(request)
            if delay or self.waiting:  # (answers stay in order: none before an earlier one)
                loop = asyncio.get_running_loop()
                self.due = max(self.due + 1e-6, loop.time() + delay)
                self.waiting += 1
                loop.call_at(self.due, self.answer, close)
            elif not self.answer(close):
                return

    def answer(self, close: bool) -> bool:
        """Write one answer; False once the connection is closed."""
        assert self.transport is not None
        self.waiting = max(0, self.waiting - 1)
        if self.transport.is_closing():
            return False
        close = close or self.stopping
        self.transport.write(self.closing_response if close else self.response)
        if close and not self.waiting:
            self.transport.close()
            return False
        return True

    def stop(self) -> None:
        """Graceful stop: an idle connection closes now, a busy one after its answer."""
        self.stopping = True
        if self.transport is not None and not self.buffer and not self.waiting:
            self.transport.close()


def _delay(request: bytes) -> float:
    if request.startswith(b"GET /slow"):
        return SLOW_S
    return _ready_delay if request.startswith(b"GET /ready") else 0.0


def _slow_ready(slow: bool) -> None:
    global _ready_delay
    _ready_delay = READY_SLOW_S if slow else 0.0


async def serve(port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    # (before listening: a start is awaited by connecting, and SIGUSR1 would else kill)
    loop.add_signal_handler(signal.SIGUSR1, _slow_ready, True)
    loop.add_signal_handler(signal.SIGUSR2, _slow_ready, False)
    body = f"{name}\n".encode()
    server = await loop.create_server(
        lambda: _Http(body), "127.0.0.1", port, reuse_address=True, backlog=1024
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()  # refuse new connections from now on
    for conn in list(_open):
        conn.stop()
    # at most 1 s for answers in flight, SLOW_S more when a /slow answer is among them
    slow = any(conn.waiting for conn in _open)
    for _ in range(int((1 + (SLOW_S if slow else 0)) * 100)):
        if not _open:
            break
        await asyncio.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="backend")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.name))


if __name__ == "__main__":
    main()
