"""``managed.launch: false``: an apply that finds our master down asks the master socket
first (synapse.haproxy.came_back), one question at a time, and revives only a master it can
adopt (review s46: a stopped master's CLI filled, a foreign one's two errors per apply)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from haproxy_helpers import serves, web

from synapse.contract import ApplyOutcome
from testbed.process import free_port

ELSEWHERE = {"launch": False, "stats": {"enabled": False}, "stop_on_exit": True}


def _master(binary: str, config: Path, master_socket: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([binary, "-W", "-db", "-S", f"{master_socket},mode,600", "-f",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def _connects(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except BlockingIOError:  # (EAGAIN: its accept queue is full)
            return False
    return True


async def _timed_out_start(managed_factory, http_backend_factory):
    syn = managed_factory(managed=ELSEWHERE, restart_interval=30.0)  # (no retry meanwhile)
    syn._managed.start_timeout = 1.0
    await syn.start()
    port, b1 = free_port(), http_backend_factory("b1")
    assert (await syn.apply([web(port, [b1])], "start")).reload is ApplyOutcome.FAILED
    return syn, port, b1


async def test_a_stopped_master_is_asked_once_not_on_every_apply(
    managed_factory, http_backend_factory, sockdir: Path
) -> None:
    """A master its container started, stopped (docker pause) before synapse adopted it:
    each apply opened a connection it never accepted and waited 1 s for it (14 applies: 10 s,
    and then its master socket refused every connection: the accept queue full, EAGAIN)."""
    syn, port, b1 = await _timed_out_start(managed_factory, http_backend_factory)
    master_socket = syn.settings.master_socket
    master = _master("haproxy", sockdir / "haproxy.cfg", master_socket)
    try:
        await serves(port, {"b1"})
        os.kill(master.pid, signal.SIGSTOP)
        began = time.monotonic()
        for i in range(14):
            await syn.apply([web(port, [b1, http_backend_factory(f"x{i}")])], f"change {i}")
        took = time.monotonic() - began
        assert took < 4.0, took  # (the first waits 1 s for its answer, the others none)
        assert _connects(master_socket)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(master.pid, signal.SIGCONT)
            os.killpg(master.pid, signal.SIGKILL)
        await asyncio.to_thread(master.wait, 10)


async def test_a_master_synapse_cannot_adopt_is_not_revived_on_every_apply(
    managed_factory, http_backend_factory, sockdir: Path, caplog
) -> None:
    """A master that answers on our socket but is not one synapse can adopt (here: a binary
    not named HAProxy; in docker, another PID namespace): every apply tried, and logged
    haproxy_adopt_failed and haproxy_start_failed (errors) each time."""
    syn, port, b1 = await _timed_out_start(managed_factory, http_backend_factory)
    other = sockdir / "not-named-so"
    shutil.copy(shutil.which("haproxy") or "/usr/sbin/haproxy", other)
    master = _master(str(other), sockdir / "haproxy.cfg", syn.settings.master_socket)
    try:
        await serves(port, {"b1"})
        with caplog.at_level(logging.INFO, logger="synapse.haproxy"):
            for i in range(3):
                await syn.apply([web(port, [b1, http_backend_factory(f"x{i}")])], f"change {i}")
        errors = [r.message for r in caplog.records if r.levelno >= logging.ERROR]
        assert "haproxy_adopt_failed" not in errors and "haproxy_start_failed" not in errors
        assert syn._managed.master_pid is None  # (not adopted)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        await asyncio.to_thread(master.wait, 10)
