"""testbed.process.process_gone on a real process whose first thread exits before the others.

A killed multi-threaded process (an HAProxy worker with nbthread > 1) shows "Z" for its
first thread while its other threads still exit, and its listening sockets still accept
then. Round 48's CI: a test that waited for a killed HAProxy with a "Z" check connected
to the dying worker instead of being refused.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from testbed.process import free_port, process_gone, wait_until

# The main thread leaves with pthread_exit (a zombie leader) while a second thread holds
# the process, and its listening socket, for HOLD_S more.
HOLD_S = 3.0
LEADER_LEAVES_FIRST = f"""
import ctypes, socket, sys, threading, time
listener = socket.socket()
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen()
threading.Thread(target=time.sleep, args=({HOLD_S},)).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
"""


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_zombie_leader_with_a_live_thread_is_not_gone_until_that_thread_ends() -> None:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", LEADER_LEAVES_FIRST, str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        wait_until(lambda: _state(child.pid) == "Z", 2, what="the first thread to exit")
        assert not process_gone(child.pid)  # (the "Z" check alone said gone here)
        socket.create_connection(("127.0.0.1", port), timeout=1).close()  # still accepted
        started = time.monotonic()
        wait_until(lambda: process_gone(child.pid), HOLD_S + 5, what="the last thread to end")
        assert time.monotonic() - started > 0.5  # gone with the second thread, not before
    finally:
        child.kill()
        child.wait()
