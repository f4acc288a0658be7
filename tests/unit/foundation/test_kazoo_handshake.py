"""BulkConnection without a socket: a session handshake waits at most HANDSHAKE_TIMEOUT_CAP_S,
whatever the session timeout; ``send_now`` writes only from inside its own reply read."""

from __future__ import annotations

import threading
from collections import deque
from types import SimpleNamespace
from typing import Any

from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import GetData

from smartstack import kazoo_conn
from smartstack.kazoo_conn import HANDSHAKE_TIMEOUT_CAP_S, BulkConnection


def test_the_handshake_read_timeout_is_capped(monkeypatch) -> None:
    seen: list[float] = []

    def invoke(self: Any, timeout: float, request: Any, xid: Any = None) -> str:
        seen.append(timeout)
        return "answer"

    monkeypatch.setattr(ConnectionHandler, "_invoke", invoke)
    conn = BulkConnection.__new__(BulkConnection)  # (no client, no socket: the unit tier)
    assert conn._invoke(60.0, object()) == "answer"  # a 60 s session, one host
    assert conn._invoke(2.5, object(), xid=-4) == "answer"  # a short one stays as it is
    assert seen == [HANDSHAKE_TIMEOUT_CAP_S, 2.5]
    assert kazoo_conn.HANDSHAKE_TIMEOUT_CAP_S < 45  # below what a reconnection test waits


def test_send_now_writes_only_from_inside_the_connections_own_reply_read() -> None:
    """A request written at once takes the next xid and joins ``_pending`` in write order
    (kazoo matches replies to it in that order); from any other thread, or outside a
    reply read, or when the write fails, it is not written and not pending."""
    written: list[bytes] = []
    conn = BulkConnection.__new__(BulkConnection)  # (no client, no socket: the unit tier)
    conn.client = SimpleNamespace(_pending=deque())
    conn._xid, conn._write_timeout = 41, 1.0
    conn._write = lambda msg, timeout: written.append(bytes(msg))  # type: ignore[method-assign]
    conn._buffering, conn._reader = False, threading.get_ident()
    assert not conn.send_now(GetData("/a", False), "r0")  # not inside a reply read
    conn._buffering = True
    assert conn.send_now(GetData("/a", False), "r1") and conn.send_now(GetData("/b", False), "r2")
    assert [(xid, result) for _, result, xid in conn.client._pending] == [(42, "r1"), (43, "r2")]
    assert written[0][4:8] == (42).to_bytes(4, "big") and len(written) == 2
    other: list[bool] = []
    thread = threading.Thread(target=lambda: other.append(conn.send_now(GetData("/c", False), 3)))
    thread.start()
    thread.join()
    assert other == [False]

    def broken(msg: bytes, timeout: float) -> None:
        raise OSError("connection reset")

    conn._write = broken  # type: ignore[method-assign]
    assert not conn.send_now(GetData("/d", False), "r4")
    assert conn._xid == 43 and len(conn.client._pending) == 2
