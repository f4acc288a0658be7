"""Keep the test's event loop late, as nerve's is under a CPU quota or a burst of checks,
and services on threads of their own that answer meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socketserver
import threading
import time
from collections.abc import Iterator

HANG_BOUND_S = 30.0  # a service that never answers lets go after this (a test's bound)


def lag_loop(turn_s: float, for_s: float) -> None:
    """Every turn of the running loop blocks ``turn_s`` (the whole process stops: other
    threads, such as a test's servers, run meanwhile) until ``for_s`` has passed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + for_s

    def block() -> None:
        time.sleep(turn_s)
        if loop.time() < end:
            loop.call_soon(block)

    loop.call_soon(block)


class _Answer(http.server.BaseHTTPRequestHandler):
    server: ThreadedHttpService

    def do_GET(self) -> None:
        if self.server.answer_s is None:  # read the request, never answer
            self.server.release.wait(HANG_BOUND_S)
            return
        time.sleep(self.server.answer_s)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class ThreadedHttpService(http.server.ThreadingHTTPServer):
    """An HTTP service on 127.0.0.1 on threads of its own (it answers while the test's loop
    blocks): 200 to a GET after ``answer_s``; None: it reads the request and never answers."""

    daemon_threads = True

    def __init__(self, answer_s: float | None) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.answer_s = answer_s
        self.release = threading.Event()


@contextlib.contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[int]:
    """Runs ``server`` on a thread; its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        if isinstance(server, ThreadedHttpService):
            server.release.set()
        server.shutdown()
        server.server_close()
