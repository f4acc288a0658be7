"""The ZooKeeper reporter's watch on its own node (another client deleting it), against a
stand-in connection: no real server, so lost answers can be scripted."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kazoo.exceptions import ConnectionLoss, NoNodeError
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from nerve_testlib import until

from nerve.reporters.zookeeper import ZooKeeperReporter
from smartstack.record import Registration

RECORD = Registration("10.0.0.5", 8080, "web-1")


class FlakyZooKeeper:
    """A ZooKeeperConnection stand-in keeping nodes in a dict; the first ``lose_watches``
    watching reads get no answer (a connection blip, the session lives on)."""

    hosts, auth, connected = "zk:2181", None, True

    def __init__(self, lose_watches: int = 0) -> None:
        self.calls: list[str] = []
        self.nodes: dict[str, tuple[bytes, SimpleNamespace]] = {}
        self.watches: dict[str, Any] = {}  # path -> watcher, as the server keeps them
        self.lose_watches = lose_watches
        self.client = SimpleNamespace(client_id=(1, b""))
        self.loop = asyncio.get_running_loop()
        self.created = 0

    def add_listener(self, listener: object) -> None:
        pass

    def remove_listener(self, listener: object) -> None:
        pass

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(method)
        path = args[0]
        if method == "get_children":
            return [p.rpartition("/")[2] for p in self.nodes if p.rpartition("/")[0] == path]
        if method == "create":
            self.created += 1
            node = f"{path}{self.created:010d}"
            stat = SimpleNamespace(czxid=100 + self.created, ephemeralOwner=1)
            self.nodes[node] = (args[1], stat)
            return node, stat
        if method == "get":
            watch = kwargs.get("watch")
            if watch is not None and self.lose_watches:
                self.lose_watches -= 1
                raise ConnectionLoss
            if path not in self.nodes:
                raise NoNodeError  # and no watch left, as on a real server
            if watch is not None:
                self.watches[path] = watch
            return self.nodes[path]
        raise AssertionError(method)

    def delete_from_outside(self, path: str) -> None:
        """Another client deletes ``path``: the node goes and its watch fires (once)."""
        del self.nodes[path]
        watcher = self.watches.pop(path)
        watcher(WatchedEvent(EventType.DELETED, KeeperState.CONNECTED, path))


async def test_a_watch_whose_arming_got_no_answer_is_armed_again() -> None:
    """The create lands, the read that arms the watch does not answer: the reporter must
    not rest as registered with no watch (an outside delete would never be repaired)."""
    conn = FlakyZooKeeper(lose_watches=1)
    reporter = ZooKeeperReporter("svc", RECORD, conn, "/s", instance_id="web-1", op_timeout=1.0)
    reporter.set_registered(True)
    reporter.start()
    try:
        await until(lambda: conn.watches, timeout=5, what="the watch armed again")
        await until(lambda: reporter.in_sync, timeout=5, what="in sync")
        (node,) = conn.nodes
        assert reporter.registered and reporter.node == node
        assert list(conn.watches) == [node] and conn.created == 1  # adopted, not re-created

        conn.delete_from_outside(node)  # the watch now does its job
        await until(lambda: len(conn.nodes) == 1 and node not in conn.nodes, timeout=5)
        assert reporter.node in conn.nodes and reporter.node in conn.watches
    finally:
        await reporter.stop(withdraw=False)
