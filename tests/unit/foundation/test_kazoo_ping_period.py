"""kazoo_conn pings every sixth of the session (kazoo: every third), so a registry stall
of up to ~5/6 of the session no longer expires it, and still declares the connection dead
no later than kazoo does (the server last heard from 2/3 of the session before)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.protocol.connection import ConnectionHandler

from smartstack import kazoo_conn
from smartstack.kazoo_conn import BulkConnection, UnansweredPings, ping_read_timeout


def connection(monkeypatch: pytest.MonkeyPatch, session_ms: float) -> BulkConnection:
    """A BulkConnection whose kazoo handshake answers with kazoo's own timeouts (no socket)."""

    def connect(self: Any, *args: Any) -> tuple[float, float]:
        return session_ms * 2 / 3, session_ms  # kazoo: read timeout 2/3, connect timeout

    monkeypatch.setattr(ConnectionHandler, "_connect", connect)
    conn = BulkConnection.__new__(BulkConnection)
    conn.client = SimpleNamespace(_session_timeout=session_ms)
    conn.logger = logging.getLogger("test")
    return conn


@pytest.mark.parametrize("session_s", [4.0, 10.0, 30.0])
def test_the_loop_pings_every_sixth_of_the_session(
    monkeypatch: pytest.MonkeyPatch, session_s: float
) -> None:
    conn = connection(monkeypatch, session_s * 1000)
    read_timeout_ms, connect_timeout_ms = conn._connect("zk", "127.0.0.1", 2181)
    # kazoo's loop pings every half of the read timeout it is given (less a jitter)
    assert read_timeout_ms / 2 / 1000 == pytest.approx(session_s / 6)
    assert connect_timeout_ms == session_s * 1000  # unchanged


def test_a_reply_read_keeps_kazoos_own_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connection(monkeypatch, 9000.0)
    loop_timeout_ms, _ = conn._connect("zk", "127.0.0.1", 2181)
    seen: list[float] = []
    monkeypatch.setattr(ConnectionHandler, "_read_socket", lambda self, t: seen.append(t))
    conn._rbuf, conn._buffering, conn._socket = bytearray(), False, None
    conn._read_socket(loop_timeout_ms / 1000)
    assert seen == [pytest.approx(6.0)]  # 2/3 of the session, as kazoo reads a reply


def test_short_sessions_ping_no_faster_than_the_floor() -> None:
    assert ping_read_timeout(2000 * 2 / 3) == 1000.0  # a 2 s session: every 0.5 s
    assert ping_read_timeout(600.0) == 600.0  # kazoo's own is shorter still: kept


def test_the_connection_is_dead_after_three_unanswered_pings() -> None:
    client = KazooClient(hosts="127.0.0.1:1")  # never started: no socket
    kazoo_conn.install(client, None)
    pings = client._connection.ping_outstanding  # what kazoo's loop sets, clears and checks
    assert isinstance(pings, UnansweredPings)
    for _ in range(2):
        pings.set()  # a ping sent, then its period without an answer
        assert not pings.is_set()  # kazoo would drop the connection here: not yet
    pings.set()
    assert pings.is_set()  # three in a row: half the session after the first
    pings.clear()  # a ping's reply
    pings.set()
    assert not pings.is_set()


def test_the_granted_session_timeout_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server answers the handshake with its own bound (maxSessionTimeout): kazoo uses
    it for its timeouts but keeps only the asked one (``_session_timeout``)."""
    from kazoo.protocol.serialization import Connect

    answer = SimpleNamespace(time_out=4000)
    monkeypatch.setattr(ConnectionHandler, "_invoke", lambda self, t, req, xid=None: (answer, 0))
    conn = connection(monkeypatch, 30000.0)
    conn._addresses, conn.granted_ms = 1, None
    conn._invoke(10.0, Connect(0, 0, 30000, 0, b"\0" * 16, False))
    assert conn.granted_ms == 4000
    answer.time_out = 0  # an expired session's answer: no session, nothing granted
    conn._invoke(10.0, Connect(0, 0, 30000, 0, b"\0" * 16, False))
    assert conn.granted_ms == 4000
