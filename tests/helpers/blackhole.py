"""A TCP relay on 127.0.0.1 that can go silent, as a registry peer behind a dropping firewall.

``BlackholeRelay(upstream)`` forwards every connection it accepts to ``upstream`` in both
directions, on a thread of its own (usable from async and threaded tests alike).
``silence()`` stops forwarding on every open connection, in both directions, and keeps them
open: no byte, no FIN, no RST (what a peer whose packets are dropped looks like; the kernel
still acknowledges on loopback, so only an application-level ping can tell). New
connections are then either accepted and left silent (``new="hold"``: a member that answers
the SYN but nothing after) or never completed (``new="drop"``: the listen queue is shrunk to
one and filled, so Linux drops further SYNs and a connect waits for its timeout).
``resume()`` forwards again, what was buffered meanwhile included (a healed partition).
``writes_upstream`` and ``last_write_upstream`` (monotonic) count the clients' forwarded
writes: a test can start a silence at a chosen moment after a client's ping.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from typing import Literal

Mode = Literal["hold", "drop"]
CHUNK = 64 * 1024
TICK_S = 0.05  # how soon the thread sees silence()/resume()/close()


class BlackholeRelay:
    def __init__(self, upstream: tuple[str, int] | str) -> None:
        if isinstance(upstream, str):
            host, port = upstream.rsplit(":", 1)
            upstream = (host, int(port))
        self.upstream = upstream
        self.silent = False
        self.accepted = 0  # connections accepted (while silent too)
        self.writes_upstream = 0  # clients' reads forwarded upstream
        self.last_write_upstream = 0.0  # monotonic, the latest of them
        self._upstreams: set[socket.socket] = set()
        self._new: Mode = "hold"
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._pairs: dict[socket.socket, socket.socket | None] = {}  # either end -> other
        self._held: list[socket.socket] = []  # accepted while silent: no upstream yet
        self._fillers: list[socket.socket] = []  # fill the listen queue ("drop")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole-relay", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._listener.getsockname()[:2]

    @property
    def endpoint(self) -> str:
        host, port = self.address
        return f"{host}:{port}"

    def start(self) -> BlackholeRelay:
        self._thread.start()
        return self

    def silence(self, new: Mode = "hold") -> None:
        with self._lock:
            self.silent, self._new = True, new
            if new == "drop":
                self._listener.listen(0)  # a queue of one: filled, further SYNs are dropped
        if new == "drop":
            self._fill_queue()

    def _fill_queue(self) -> None:
        """Connect until a connect times out: the queue is full and SYNs are dropped."""
        for _ in range(8):
            try:
                filler = socket.create_connection(self.address, timeout=0.3)
            except TimeoutError:
                return
            self._fillers.append(filler)
        raise RuntimeError("the listen queue did not fill: SYNs are not dropped")

    def resume(self) -> None:
        with self._lock:
            self.silent = False
            self._listener.listen(128)
            for filler in self._fillers:
                filler.close()  # accepted by the thread, then seen closed
            self._fillers.clear()
            held, self._held = self._held, []
        for sock in held:
            self._connect_upstream(sock)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            socks = [*self._pairs, *self._held, *self._fillers, self._listener]
            self._pairs.clear()
        for sock in socks:
            sock.close()

    def __enter__(self) -> BlackholeRelay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the relay's thread -------------------------------------------------------

    def _connect_upstream(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.setblocking(False)
        with self._lock:
            self._pairs[client] = upstream
            self._pairs[upstream] = client
            self._upstreams.add(upstream)

    def _accept(self) -> None:
        if self.silent and self._new == "drop":
            return  # the queue stays full
        with contextlib.suppress(BlockingIOError):
            while True:
                sock, _ = self._listener.accept()
                sock.setblocking(False)
                self.accepted += 1
                if not self.silent:
                    self._connect_upstream(sock)
                else:
                    self._held.append(sock)

    def _run(self) -> None:
        while not self._stop.is_set():
            with selectors.DefaultSelector() as selector:
                # While dropping, nothing is accepted: the queue stays full.
                if not (self.silent and self._new == "drop"):
                    selector.register(self._listener, selectors.EVENT_READ)
                with self._lock:
                    readable = [] if self.silent else list(self._pairs)
                for sock in readable:
                    selector.register(sock, selectors.EVENT_READ)
                for key, _ in selector.select(TICK_S):
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._forward(key.fileobj)  # type: ignore[arg-type]

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            other = self._pairs.get(sock)
        if other is None or self.silent:
            return
        try:
            data = sock.recv(CHUNK)
            if data:
                other.setblocking(True)  # a relay's write: short, to a local peer
                other.sendall(data)
                other.setblocking(False)
                if other in self._upstreams:
                    self.writes_upstream += 1
                    self.last_write_upstream = time.monotonic()
                return
        except OSError:
            pass
        with self._lock:  # closed at one end: close both, as the peer would see
            self._pairs.pop(sock, None)
            self._pairs.pop(other, None)
            self._upstreams.discard(sock)
            self._upstreams.discard(other)
        sock.close()
        other.close()
