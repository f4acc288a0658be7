"""A TCP front for a private dockerd's unix socket whose open connections can go silently dead.

`freeze()` stops relaying on every connection open now, in both directions, without closing
anything: what a NAT or load balancer whose entry expired does (packets dropped, no RST).
New connections still work, as they would through a fresh NAT entry.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class BlackholeProxy:
    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.frozen: set[int] = set()
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.unix_path)
            index = len(self.pairs)
            self.pairs.append((client, engine))
            for src, dst in ((client, engine), (engine, client)):
                threading.Thread(target=self._pump, args=(index, src, dst), daemon=True).start()

    def _pump(self, index: int, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            while index in self.frozen:  # dropped on the floor until close()
                if self.closed.wait(0.1):
                    return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def freeze(self) -> None:
        self.frozen = set(range(len(self.pairs)))

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for pair in self.pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()
