"""A session handshake waits at most HANDSHAKE_TIMEOUT_CAP_S, whatever the session timeout,
and at most the session's share of each address the hosts resolved to."""

from __future__ import annotations

import logging
import socket
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.protocol.connection import ConnectionHandler

from smartstack import kazoo_conn
from smartstack.kazoo_conn import HANDSHAKE_TIMEOUT_CAP_S, BulkConnection


def connection(monkeypatch: pytest.MonkeyPatch, session_s: float, hosts: list) -> BulkConnection:
    """A BulkConnection of a client with ``hosts`` (no socket: the unit tier), whose
    handshake timeouts go to ``conn.seen``."""
    seen: list[float] = []

    def invoke(self: Any, timeout: float, request: Any, xid: Any = None) -> str:
        seen.append(timeout)
        return "answer"

    monkeypatch.setattr(ConnectionHandler, "_invoke", invoke)
    conn = BulkConnection.__new__(BulkConnection)
    conn.client = SimpleNamespace(
        _session_timeout=session_s * 1000, hosts=hosts, randomize_hosts=False
    )
    conn.logger = logging.getLogger("test")
    conn._addresses = 0
    conn.seen = seen  # type: ignore[attr-defined]
    return conn


def test_the_handshake_read_timeout_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = connection(monkeypatch, 60.0, [("zk", 2181)])
    assert conn._invoke(60.0, object()) == "answer"  # a 60 s session, one host
    assert conn._invoke(2.5, object(), xid=-4) == "answer"  # a short one stays as it is
    assert conn.seen == [HANDSHAKE_TIMEOUT_CAP_S, 2.5]  # type: ignore[attr-defined]
    assert kazoo_conn.HANDSHAKE_TIMEOUT_CAP_S < 45  # below what a reconnection test waits


# One address: nothing else to try, so kazoo's own wait (a slow handshake must complete).
@pytest.mark.parametrize(("addresses", "wait"), [(1, 10.0), (2, 10 / 3), (5, 2.0)])
def test_one_name_waits_the_session_share_of_each_address(
    monkeypatch: pytest.MonkeyPatch, addresses: int, wait: float
) -> None:
    def getaddrinfo(host: str, port: int, *args: Any) -> list:
        assert host == "zk.test"
        tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
        return [(*tcp, (f"127.0.0.{n + 1}", port)) for n in range(addresses)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    conn = connection(monkeypatch, 10.0, [("zk.test", 2181)])
    assert len(conn._expand_client_hosts()) == addresses
    # kazoo's own wait: the session divided by the configured hosts (one), 10 s: on a
    # member that accepts and never answers, the whole session.
    conn._invoke(10.0 / 1, object())
    assert conn.seen == [pytest.approx(wait)]  # type: ignore[attr-defined]
