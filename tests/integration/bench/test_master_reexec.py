"""The benchmarks' master CLI questions against a real HAProxy master that re-executes itself.

HAProxy's master re-executes at every reload (and once after its start, in wait mode). A
connection queued on the listener it closes is reset; `python -m bench propagation`'s
`show proc` once failed the bench smoke that way (CI, 2026-12-05: ConnectionResetError
at bench/haproxy.py unix_request). A read-only question must ride that out.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from bench.haproxy import HAProxyView
from testbed.process import free_port

CONFIG = """
frontend f
    bind 127.0.0.1:{port}
    default_backend b
backend b
    server s1 127.0.0.1:1
"""
RELOADS = 30


def test_show_proc_rides_out_reloads_of_the_master(haproxy_factory) -> None:
    haproxy = haproxy_factory(CONFIG.format(port=free_port()))
    view = HAProxyView(haproxy.admin_socket, haproxy.master_socket)
    done = threading.Event()

    def reload_again_and_again() -> None:
        try:
            for _ in range(RELOADS):
                os.kill(haproxy.pid, signal.SIGUSR2)
                time.sleep(0.1)
        finally:
            done.set()

    reloader = threading.Thread(target=reload_again_and_again)
    reloader.start()
    answers, deadline = 0, time.monotonic() + 30
    try:
        while not done.is_set() and time.monotonic() < deadline:
            assert "master" in view.master("show proc", retry_s=5)
            answers += 1
    finally:
        reloader.join()
    procs = view.procs()
    assert procs.master_reloads >= RELOADS // 2, procs  # the master did re-execute meanwhile
    assert answers > 100, answers  # and was asked all along
