"""An independent watcher on the probe's path: when the registry itself announces a change.

synapse's own latency is "its watch event -> HAProxy changed"; the registry's part is
"write sent -> a watcher hears of it". This module is that other watcher, with its own
session/stream, as synapse has: ZooKeeper through a minimal client of its own (one
persistent recursive watch, ZooKeeper 3.6+), etcd through the v3 JSON gateway's streaming
/v3/watch. Each event's arrival (time.perf_counter, the benchmark's clock) is kept, stamped
by a thread that does nothing but read that socket, as the bytes are read; `after(t)`
returns the first one later than `t`.

The ZooKeeper one was kazoo with a re-armed children watch: kazoo hands a watch event from
its connection thread to a callback thread, and that hop (p50 0.4-0.7 ms, spikes to 15-20
ms on 2 busy cores, measured beside a raw reader in the same process) was counted as the
registry's.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import struct
import sys
import threading
import time

# The observer's thread must take the GIL at once when its event arrives, not after the
# polling thread's 5 ms switch interval: its timestamp is what synapse's latency starts from.
SWITCH_INTERVAL_S = 0.0001


class Observer:
    """Event arrival times on one path, from a watcher that is not synapse."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._cond = threading.Condition()
        self.lost: BaseException | None = None  # why the reader thread ended
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)

    def _seen(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._cond:
            self._times.append(now)
            self._cond.notify_all()

    def _lost(self, err: BaseException) -> None:
        with self._cond:
            self.lost = err
            self._cond.notify_all()

    def after(self, moment: float, timeout: float = 10.0) -> float | None:
        """The first event that arrived after `moment` (None if none within `timeout`;
        RuntimeError at once when the reader thread has ended: no event can come)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                later = [t for t in self._times if t > moment]
                if later:
                    return later[0]
                if self.lost is not None:
                    raise RuntimeError(f"the registry observer stopped reading: {self.lost!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        sys.setswitchinterval(self._old_switch)


# ZooKeeper's wire protocol, as much as a watcher needs (jute: big-endian, length-prefixed).
_ZK_FRAME = struct.Struct(">i")
_ZK_REPLY_HEADER = struct.Struct(">iqi")  # xid, zxid, err
_ZK_ADD_WATCH, _ZK_PING = 106, 11
_ZK_PERSISTENT_RECURSIVE = 1
_ZK_NOTIFICATION_XID, _ZK_PING_XID = -1, -2
_ZK_SESSION_MS = 30000


class ZkObserver(Observer):
    """A ZooKeeper session of its own with one persistent recursive watch on ``path``: every
    node event under it is stamped by the reader thread when its bytes arrive (no kazoo:
    its hand-off to a callback thread is not the registry's)."""

    def __init__(self, hosts: str, path: str, session_ms: int = _ZK_SESSION_MS) -> None:
        super().__init__()
        self.path = path
        host, _, port = hosts.split(",")[0].rpartition(":")
        self._buffer = b""
        self._sent_at = time.monotonic()
        try:
            self.sock = socket.create_connection((host, int(port)), timeout=30)
        except OSError:
            super().close()  # (the switch interval)
            raise
        try:
            self._ping_every = self._connect(path, session_ms)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._read, name="zk-observer", daemon=True)
        self._thread.start()

    def _connect(self, path: str, session_ms: int) -> float:
        """The session and the watch; how often to ping (a third of the negotiated session)."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # ConnectRequest: protocolVersion, lastZxidSeen, timeOut, sessionId, passwd, readOnly
        self._send(struct.pack(">iqiqi16s?", 0, 0, session_ms, 0, 16, b"", False))
        answer = self._frame()
        negotiated_ms = struct.unpack_from(">i", answer, 4)[0]
        encoded = path.encode()
        self._send(
            struct.pack(">iii", 1, _ZK_ADD_WATCH, len(encoded)) + encoded
            + struct.pack(">i", _ZK_PERSISTENT_RECURSIVE)
        )  # fmt: skip
        err = _ZK_REPLY_HEADER.unpack_from(self._frame())[2]
        if err:
            raise RuntimeError(f"ZooKeeper refused addWatch on {path} (error {err}; needs 3.6+)")
        return max(negotiated_ms / 3000, 0.2)

    def _send(self, payload: bytes) -> None:
        self.sock.sendall(_ZK_FRAME.pack(len(payload)) + payload)
        self._sent_at = time.monotonic()

    def _frame(self) -> bytes:
        """The next whole frame (blocking; a socket timeout propagates)."""
        while True:
            if len(self._buffer) >= 4:
                size = _ZK_FRAME.unpack_from(self._buffer)[0]
                if len(self._buffer) >= 4 + size:
                    frame, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
                    return frame
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("ZooKeeper closed the observer's connection")
            self._buffer += chunk

    def _read(self) -> None:
        try:
            while True:
                # ZooKeeper counts only what the client sends: a ping per third of the
                # session since the last send, however many events arrive meanwhile.
                due = self._sent_at + self._ping_every - time.monotonic()
                if due <= 0:
                    self._send(struct.pack(">ii", _ZK_PING_XID, _ZK_PING))
                    continue
                self.sock.settimeout(due)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    continue
                now = time.perf_counter()  # the event's bytes are here
                if not chunk:
                    raise ConnectionError("ZooKeeper closed the observer's connection")
                self._buffer += chunk
                while len(self._buffer) >= 4:
                    size = _ZK_FRAME.unpack_from(self._buffer)[0]
                    if len(self._buffer) < 4 + size:
                        break
                    xid = _ZK_REPLY_HEADER.unpack_from(self._buffer, 4)[0]
                    self._buffer = self._buffer[4 + size :]
                    if xid == _ZK_NOTIFICATION_XID:
                        self._seen(now)
        except Exception as err:  # (close() ends it too: an OSError)
            self._lost(err)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # ends the reader thread's recv
        self.sock.close()
        super().close()


class EtcdObserver(Observer):
    def __init__(self, port: int, prefix: str) -> None:
        super().__init__()
        key = prefix.rstrip("/") + "/"
        end = key[:-1] + chr(ord(key[-1]) + 1)
        body = {"create_request": {"key": _b64(key), "range_end": _b64(end)}}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        self.conn.request("POST", "/v3/watch", json.dumps(body).encode())
        self.resp = self.conn.getresponse()
        self.resp.readline()  # the "created" answer: the watch is in place from here on
        self._thread = threading.Thread(target=self._read, name="etcd-observer", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while line := self.resp.readline():
                if json.loads(line).get("result", {}).get("events"):
                    self._seen()
            raise ConnectionError("etcd ended the observer's watch stream")
        except Exception as err:  # (close() ends it too)
            self._lost(err)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.sock.shutdown(2)  # ends the reader thread's readline
        self.conn.close()
        super().close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
