"""A BulkConnection with no socket: what its send pass writes is kept (unit tests)."""

from __future__ import annotations

import collections
import logging
from types import SimpleNamespace
from typing import Any

from smartstack.kazoo_conn import BulkConnection


def send_only_connection(queue: collections.deque[Any]) -> tuple[Any, list[bytes]]:
    """A connection whose client queue is ``queue``; the bytes each pass writes."""
    conn: Any = BulkConnection.__new__(BulkConnection)
    written: list[bytes] = []
    conn.client = SimpleNamespace(_queue=queue, _pending=collections.deque())
    conn.logger = logging.getLogger("test.kazoo")
    conn._xid = 0
    conn._write = lambda data, timeout: written.append(data)
    conn._read_sock = SimpleNamespace(recv=lambda n: b"\0" * n)
    return conn, written
