"""A session handshake waits at most HANDSHAKE_TIMEOUT_CAP_S, whatever the session timeout."""

from __future__ import annotations

from typing import Any

from kazoo.protocol.connection import ConnectionHandler

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
