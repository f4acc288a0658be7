"""The propagation bench's ZooKeeper observer (a minimal client of its own) and the server's
own account of a window (bench.zk_stats), against a real ZooKeeper."""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time

import pytest
from kazoo.client import KazooClient

from bench.observer import ZkObserver
from bench.zk_stats import ServerWindow
from testbed.process import free_port


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


def test_the_session_outlives_steady_events(zk) -> None:
    """ZooKeeper counts only what the client sends: with events arriving more often than a
    third of the session, the observer must still ping, or the session expires."""
    writer = KazooClient(hosts=zk.hosts, timeout=30)
    writer.start(timeout=30)
    writer.ensure_path("/obs/steady")
    observer = ZkObserver(zk.hosts, "/obs/steady", session_ms=2000)  # (the shortest: 2 ticks x2)
    try:
        end = time.monotonic() + 5.0  # over twice the session
        heard = 0
        while time.monotonic() < end:
            sent = time.perf_counter()
            writer.set("/obs/steady", b"x")
            assert observer.after(sent, timeout=2) is not None, observer.lost
            heard += 1
            time.sleep(0.1)  # (never a third of the session's silence)
        assert heard > 20 and observer.lost is None
    finally:
        observer.close()
        writer.stop()
        writer.close()
    with pytest.raises(RuntimeError, match="stopped reading"):  # closed: no wait for nothing
        observer.after(time.perf_counter(), timeout=30)


def test_a_failed_setup_closes_the_socket_and_restores_the_switch_interval() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    closed = threading.Event()

    def refuse_the_watch() -> None:  # a session, then an error answer to addWatch
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(struct.pack(">i", 36) + struct.pack(">iiqi16s", 0, 2000, 1, 16, b""))
        conn.recv(4096)
        conn.sendall(struct.pack(">iiqi", 16, 1, 0, -101))
        conn.settimeout(5)
        if conn.recv(4096) == b"":
            closed.set()
        conn.close()

    thread = threading.Thread(target=refuse_the_watch, daemon=True)
    thread.start()
    before = sys.getswitchinterval()
    try:
        with pytest.raises(RuntimeError, match="refused addWatch"):
            ZkObserver(f"127.0.0.1:{port}", "/obs")
        thread.join(5)
        assert closed.is_set() and sys.getswitchinterval() == before
    finally:
        server.close()


def test_a_server_that_does_not_answer_costs_its_stats_not_the_scenario() -> None:
    window = ServerWindow(free_port(), None)  # (nothing listens there: refused)
    window.start()
    assert window.stop() is None
