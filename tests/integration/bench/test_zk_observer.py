"""The propagation bench's ZooKeeper observer (a minimal client of its own) and the server's
own account of a window (bench.zk_stats), against a real ZooKeeper."""

from __future__ import annotations

import time

from kazoo.client import KazooClient

from bench.observer import ZkObserver
from bench.zk_stats import ServerWindow


def test_every_write_under_the_path_is_heard_once_and_after_it(zk) -> None:
    writer = KazooClient(hosts=zk.hosts, timeout=30)
    writer.start(timeout=30)
    writer.ensure_path("/obs/probe")
    observer = ZkObserver(zk.hosts, "/obs/probe")
    window = ServerWindow(zk.port, zk.gc_log)
    try:
        window.start()
        heard = []
        for _ in range(20):  # no re-arming between writes: none may be missed
            sent = time.perf_counter()
            node = writer.create("/obs/probe/x_", b"r", ephemeral=True, sequence=True)
            heard.append((sent, observer.after(sent, timeout=5)))
            sent = time.perf_counter()
            writer.delete(node)
            heard.append((sent, observer.after(sent, timeout=5)))
        writer.create("/obs/elsewhere", b"")  # not under the path: not heard
        time.sleep(0.2)
        assert all(at is not None and at > sent for sent, at in heard)
        assert len(observer._times) == 40
        stats = window.stop()
        assert zk.gc_log.exists() and "gc_pauses" in stats and "zk_p99_updatelatency" in stats
        assert stats["zk_p99_updatelatency"] >= stats["zk_p50_updatelatency"]
    finally:
        observer.close()
        writer.stop()
        writer.close()
