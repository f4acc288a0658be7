"""kazoo fails the requests of a dropped connection before its state leaves CONNECTED: a
caller woken by that failure (a watcher's retry: ``wait_connected`` then read again) saw
"connected" and sent again at once, into the same drop (on a loaded 2-core CI run five
retries failed in a row that way). ``connected`` is false from the drop's first step."""

from __future__ import annotations

import asyncio

from kazoo.exceptions import ConnectionLoss
from kazoo.protocol.states import KazooState, KeeperState

from smartstack.zookeeper import ZooKeeperConnection


def test_a_request_failed_by_a_drop_sees_the_connection_down() -> None:
    loop = asyncio.new_event_loop()
    try:
        conn = ZooKeeperConnection(["127.0.0.1:1"], loop)  # not started: kazoo's steps by hand
        client = conn.client
        client._session_callback(KeeperState.CONNECTED)  # (as kazoo's handshake ends)
        assert client.state == KazooState.CONNECTED and conn.connected
        seen: list[tuple[bool, bool]] = []
        result = client.handler.async_result()
        result.rawlink(lambda failed: seen.append((conn.connected, failed.exception is not None)))
        client._queue.append((object(), result))
        client._session_callback(KeeperState.CONNECTING)  # the drop, as kazoo's loop says it
        assert seen == [(False, True)]  # before: (True, True)
        assert isinstance(result.exception, ConnectionLoss)
        assert not conn.connected and client.state == KazooState.SUSPENDED
    finally:
        loop.close()
