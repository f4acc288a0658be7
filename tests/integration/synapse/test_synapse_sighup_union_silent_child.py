"""A SIGHUP changing a ``multi`` union while one of its children never answers (an etcd
endpoint that refuses connections) is applied: real synapse, HAProxy and ZooKeeper.

Review s22/crA: such a union sends only partial lists, and the SIGHUP's new watcher waited
for a complete one (synapse/watcher_swap.py): the old one kept following the old path,
the instances that moved to the new one were never served (100% 503 once the old ones
stopped). Now a partial list whose answered children are all the changed ones completes the
swap at once; one that lacks a changed child completes it when the swap stalls (10 s).
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait_serving
from synapse_reload import sighup, web

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def union(zk: ZooKeeperServer, path: str, etcd_port: int) -> dict[str, Any]:
    return {"method": "multi", "resolver": {"method": "union"}, "watchers": {
        "zk": {"method": "zookeeper", "hosts": [zk.hosts], "path": path},
        "etcd": {"method": "etcd", "endpoints": [f"127.0.0.1:{etcd_port}"],
                 "path": "/svc/web", "etcd_transport": "json"}}}  # fmt: skip


def swapped_after(log: str) -> float:
    [line] = [x for x in log.splitlines() if "event=watcher_swapped" in x]
    assert "partial=true" in line, line
    match = re.search(r"after_s=([0-9.]+)", line)
    assert match, line
    return float(match.group(1))


@pytest.mark.long
def test_a_union_with_a_silent_child_follows_a_sighup(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, c, d = (http_backend_factory(n) for n in ("a", "c", "d"))
    writer.create("/silent/old/a_", nerve_record(a), sequence=True, makepath=True)
    writer.create("/silent/new/c_", nerve_record(c), sequence=True, makepath=True)
    writer.create("/silent/new2/d_", nerve_record(d), sequence=True, makepath=True)
    port, silent, silent2 = free_port(), free_port(), free_port()
    with Synapse(web(union(zk, "/silent/old", silent), port)) as syn:
        wait_serving(port, {"a"})
        with Load(port, seconds=40) as load:
            # Only the ZooKeeper child moves: its first answer covers the change.
            since = sighup(syn, union(zk, "/silent/new", silent))
            wait_serving(port, {"a", "c"}, timeout=8)  # a: held, maybe the silent child's
            assert swapped_after(since()) < 5
            writer.create("/silent/new/d_", nerve_record(d), sequence=True)
            wait_serving(port, {"a", "c", "d"})  # the new watcher follows /silent/new
            # Both children change, the etcd one stays silent: applied at the stall.
            since = sighup(syn, union(zk, "/silent/new2", silent2))
            wait_until(lambda: "event=watcher_swapped" in since(), 20, what=since())
            assert 10 <= swapped_after(since()) < 13
            assert "event=watcher_swap_stalled" not in since()
            time.sleep(0.5)
        assert load.ok > 0 and load.failures == [], load.failures[:5]
        assert syn.status()["services"]["web"]["watcher"].get("replacing") is None
