"""Tiny in-process HTTP backends on loopback (127.0.0.1 by default), answering their name.

`GET /health` is 200 (or 503 once told to fail), `GET /ready` the same (a readiness check: it
waits ``ready_delay`` first, a dependency gone slow), any other path returns the backend's name,
so a request through HAProxy shows which server answered. stop() really closes the port and
start() binds the same port again.
"""

from __future__ import annotations

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .process import free_port


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hanging client must not block stop()
    # socketserver's default backlog is 5: 8 clients on one backend overflowed it and a
    # dropped SYN cost a request 1 s (3 s for two): the test's timeout, not synapse's
    request_queue_size = 128
    backend: HttpBackend

    def handle_error(self, request: object, client_address: object) -> None:
        # HAProxy health checks reset the connection once they have the status line.
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def _respond(self, send_body: bool) -> None:
        backend = self.server.backend
        backend.count_request()
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/ready"):
            time.sleep(backend.health_delay if path == "/health" else backend.ready_delay)
            status, body = (200, b"ok\n") if backend.healthy else (503, b"unhealthy\n")
        else:
            status, body = 200, backend.name.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", backend.name)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    # HAProxy's bare `option httpchk` sends OPTIONS / .
    do_OPTIONS = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass  # HAProxy health checks would flood the test output


class HttpBackend:
    """One HTTP server thread bound to `host`:`port` (127.0.0.1, a free port by default;
    another loopback address: the same port elsewhere, as a DNS name that moves)."""

    def __init__(self, name: str, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.name = name
        self.port = port or free_port()
        self.host = host
        self.healthy = True
        self.health_delay = 0.0  # seconds `GET /health` waits before its answer (a slow check)
        self.ready_delay = 0.0  # the same for `GET /ready`
        self.requests = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._server is not None

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy

    def start(self) -> HttpBackend:
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)  # SO_REUSEADDR: rebinds at once
        server.backend = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"http-backend-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (connections are then refused)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> HttpBackend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<HttpBackend {self.name} {self.address} running={self.running}>"
