"""A statsd sink on 127.0.0.1: a real UDP socket that keeps every metric line it receives.

Used by tests and the demo to see what nerve and synapse send, without a statsd server.
"""

from __future__ import annotations

import socket
import threading

from .process import wait_until


class StatsdListener:
    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="statsd-sink", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            # One datagram may carry several metrics, one per line (pipelines).
            with self._lock:
                self._lines.extend(data.decode("ascii", "replace").splitlines())

    def lines(self) -> list[str]:
        """Every metric line so far, e.g. ``prod.nerve.check.web.http.success:1|c``."""
        with self._lock:
            return list(self._lines)

    def names(self) -> set[str]:
        return {line.split(":", 1)[0] for line in self.lines()}

    def wait_for(self, *names: str, timeout: float = 20.0) -> set[str]:
        """Until a line arrived for each of ``names``; returns every name seen."""

        def arrived() -> set[str] | None:
            seen = self.names()
            return seen if set(names) <= seen else None

        return wait_until(arrived, timeout, what=f"statsd lines {sorted(names)}")
