"""An independent watcher on the probe's path: when the registry itself announces a change.

synapse's own latency is "its watch event -> HAProxy changed"; the registry's part is
"write sent -> a watcher hears of it". This module is that other watcher, with its own
session/stream, as synapse has: ZooKeeper through kazoo (a children watch, re-armed on
every event), etcd through the v3 JSON gateway's streaming /v3/watch. Each event's
arrival (time.perf_counter, the benchmark's clock) is kept; `after(t)` returns the first
one later than `t`.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import sys
import threading
import time
from typing import Any

from kazoo.client import KazooClient

# The observer's thread must take the GIL at once when its event arrives, not after the
# polling thread's 5 ms switch interval: its timestamp is what synapse's latency starts from.
SWITCH_INTERVAL_S = 0.0001


class Observer:
    """Event arrival times on one path, from a watcher that is not synapse."""

    def __init__(self) -> None:
        self._times: list[float] = []
        self._cond = threading.Condition()
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)

    def _seen(self) -> None:
        now = time.perf_counter()
        with self._cond:
            self._times.append(now)
            self._cond.notify_all()

    def after(self, moment: float, timeout: float = 10.0) -> float | None:
        """The first event that arrived after `moment` (None if none within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                later = [t for t in self._times if t > moment]
                if later:
                    return later[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        sys.setswitchinterval(self._old_switch)


class ZkObserver(Observer):
    def __init__(self, hosts: str, path: str) -> None:
        super().__init__()
        self.path = path
        self.client = KazooClient(hosts=hosts, timeout=30)
        self.client.start(timeout=30)
        self._closed = False
        self.client.get_children(path, watch=self._on_event)

    def _on_event(self, _event: Any) -> None:
        self._seen()
        if not self._closed:  # re-arm (async: never block kazoo's callback thread)
            self.client.get_children_async(self.path, watch=self._on_event)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self.client.stop()
            self.client.close()
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
        with contextlib.suppress(Exception):
            while line := self.resp.readline():
                if json.loads(line).get("result", {}).get("events"):
                    self._seen()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.sock.shutdown(2)  # ends the reader thread's readline
        self.conn.close()
        super().close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
