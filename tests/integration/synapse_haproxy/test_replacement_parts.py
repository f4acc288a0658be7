"""The parts of a master's replacement (synapse.haproxy.replacement) on real processes and
sockets: the handover leaves HAProxy's listeners non-blocking, the listening sockets of a
master's workers are copied out of them (``taken``), and the Supervisor's ``wait_exit``
follows a master replaced by another instead of taking it for a crash."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from haproxy_helpers import eventually, stand_in_managed

from synapse.haproxy.getsocks import Held
from synapse.haproxy.listeners import ListenerKeeper
from synapse.haproxy.taken import take_listeners

# A stand-in master: its worker (a child) listens on a port and says which.
MASTER = textwrap.dedent("""
    import os, socket, sys, time
    if os.fork() == 0:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
        s.setblocking(False)
        print(s.getsockname()[1], flush=True)
        time.sleep(60)
    time.sleep(60)
""")


def _nonblocking(sock: socket.socket) -> bool:
    return bool(fcntl.fcntl(sock.fileno(), fcntl.F_GETFL) & os.O_NONBLOCK)


async def test_the_handover_leaves_the_listening_sockets_non_blocking(tmp_path: Path) -> None:
    """O_NONBLOCK belongs to what every holder of a socket shares: made blocking, the old
    worker of a replaced master waited in accept() for a connection the new one took, and
    its soft stop hung until HAProxy's watchdog killed it (was: ``socket.dup()``)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    keeper = ListenerKeeper(tmp_path / "m.sock.listeners", str(tmp_path / "a.sock"))
    copy = socket.socket(fileno=os.dup(listener.fileno()))  # (as received from HAProxy)
    keeper.held = [Held(copy, bytes(6))]
    handover = keeper.handover()
    assert handover is not None
    try:
        assert _nonblocking(listener)
    finally:
        await handover.close()
        keeper.drop()
        listener.close()


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


async def test_a_masters_listening_sockets_are_copied_out_of_its_worker() -> None:
    master = subprocess.Popen(
        [sys.executable, "-c", MASTER], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert master.stdout is not None
        port = int(await asyncio.to_thread(master.stdout.readline))
        held = await asyncio.to_thread(take_listeners, master.pid)
        assert [h.address for h in held] == [("127.0.0.1", port)]
        worker = int(Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text())
        fds = Path(f"/proc/{worker}/fd")
        theirs = {os.stat(fd).st_ino for fd in fds.iterdir()}
        assert _inode(held[0].sock) in theirs  # the very socket, not another on the port
        assert _nonblocking(held[0].sock)
        for h in held:
            h.sock.close()
    finally:
        os.killpg(master.pid, signal.SIGKILL)
        master.wait()


async def test_wait_exit_follows_a_master_replaced_by_another(tmp_path: Path) -> None:
    """Before, the replaced master's exit ended ``wait_exit``: the Supervisor logged
    `haproxy_exited` and restarted an HAProxy that ran."""
    haproxy = stand_in_managed(tmp_path)
    old, new = (subprocess.Popen(["sleep", "60"], start_new_session=True) for _ in range(2))
    try:
        haproxy.master_pid = old.pid
        watch = asyncio.create_task(haproxy.wait_exit())
        await asyncio.sleep(0.05)
        haproxy.master_pid = new.pid  # (as ``_replace`` does once the new one serves)
        old.kill()
        old.wait()
        await asyncio.sleep(0.3)
        assert not watch.done()
        new.kill()
        new.wait()

        async def ended() -> bool:
            return watch.done()

        await eventually(ended, "wait_exit to return once the new master exited")
    finally:
        for proc in (old, new):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
