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

from haproxy_helpers import eventually, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.runtime import MasterClient
from synapse.haproxy.sockets import HAProxySocketError
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


def _listens(path: Path) -> bool:
    """A socket listens on ``path`` (/proc/net/unix: flags 00010000, no connection made;
    HAProxy binds ``<path>.<pid>.tmp`` and renames it to ``path``: the table keeps the first)."""
    with open("/proc/net/unix") as table:
        rows = [line.split() for line in table]
    bound = {row[-1] for row in rows if len(row) == 8 and row[3] == "00010000"}
    return any(name == str(path) or name.startswith(f"{path}.") for name in bound)


async def _stop_listening(pid: int, path: Path) -> None:
    """SIGSTOP the master while its CLI listens: not in its re-exec after the start, when
    it listens on nothing (stopped there, it refused every connection: CI, round 46)."""
    for _ in range(500):
        os.kill(pid, signal.SIGSTOP)
        if await asyncio.to_thread(_listens, path):
            return
        os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
    raise AssertionError(f"the master never listened on {path}")


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
        await _stop_listening(master.pid, master_socket)
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


async def test_a_new_master_that_answers_only_after_the_restart_asked_is_adopted(
    managed_factory, http_backend_factory, sockdir: Path, caplog
) -> None:
    """A crash: the container's new master does not answer yet when the restart asks (here
    stopped; in CI its re-exec after the start, or the old worker still answering), while a
    worker answers on the admin socket. The restart's apply read that worker, found nothing
    to reload and started nothing: nothing adopted the new master or watched it (CI: not
    adopted within 20 s). A managed HAProxy that is down is now started (here: adopted)."""
    syn = managed_factory(managed=ELSEWHERE)
    await syn.start()
    port, b1 = free_port(), http_backend_factory("b1")
    config, master_socket = sockdir / "haproxy.cfg", syn.settings.master_socket
    starting = asyncio.ensure_future(syn.apply([web(port, [b1])], "start"))  # (waits for one)
    await eventually(lambda: asyncio.to_thread(config.exists), "the config file")
    first = _master("haproxy", config, master_socket)
    second: subprocess.Popen[bytes] | None = None
    try:
        assert (await starting).reload is not ApplyOutcome.FAILED
        assert await _adopted(syn, first.pid)
        second = _master("haproxy", config, master_socket)  # (takes over its sockets)
        await eventually(lambda: _answers(master_socket, second.pid), "the second one's CLI")
        os.kill(second.pid, signal.SIGSTOP)  # its master only: its worker serves on
        os.killpg(first.pid, signal.SIGKILL)  # the crash: synapse's restart asks now
        await asyncio.sleep(2.5)  # (after the restart's question: ASK_S)
        os.kill(second.pid, signal.SIGCONT)
        with caplog.at_level(logging.INFO, logger="synapse.haproxy"):
            await eventually(lambda: _adopted(syn, second.pid), "the second master adopted")
            await eventually(_unlocked(syn), "its reload done")
        await serves(port, {"b1"})
        errors = [r.message for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == ["haproxy_exited"]  # (not haproxy_differs_after_reload: a start)
    finally:
        for master in (first, second):
            if master is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(master.pid, signal.SIGCONT)
                    os.killpg(master.pid, signal.SIGKILL)
                await asyncio.to_thread(master.wait, 10)


async def _adopted(syn, pid: int) -> bool:
    return syn._managed.master_pid == pid and syn._managed.alive


def _unlocked(syn):
    async def unlocked() -> bool:
        return not syn._lock.locked()

    return unlocked


async def _answers(path: Path, pid: int) -> bool:
    try:
        proc = await MasterClient(str(path), 1.0).show_proc()
    except HAProxySocketError:  # (not started yet, or its re-exec: HAProxy refuses)
        return False
    return proc.master_pid == pid and bool(proc.workers)


async def test_a_start_waiting_for_the_master_looks_through_proc_once_a_second(
    managed_factory, http_backend_factory, sockdir: Path
) -> None:
    """While no master answers, a start's whole look for one (`show proc`, three scans of
    /proc) ran ten times a second: 36 % of a core with 2,067 processes (a host's PID
    namespace). Now once a second, with a connect to the master socket between: a master
    that comes is looked at when it listens, not at the next whole look."""
    syn = managed_factory(managed=ELSEWHERE)
    syn._managed.start_timeout = 30.0
    await syn.start()
    looks: list[str] = []
    look = syn._managed._adopt

    async def counted(why: str):
        looks.append(why)
        return await look(why)

    syn._managed._adopt = counted
    port, b1 = free_port(), http_backend_factory("b1")
    config = sockdir / "haproxy.cfg"
    starting = asyncio.ensure_future(syn.apply([web(port, [b1])], "start"))  # (waits for one)
    await eventually(lambda: asyncio.to_thread(config.exists), "the config file")
    await asyncio.sleep(3.0)
    assert len(looks) <= 8, len(looks)  # (30 before: one every 0.1 s)
    master = _master("haproxy", config, syn.settings.master_socket)
    try:
        assert (await starting).reload is not ApplyOutcome.FAILED
        assert await _adopted(syn, master.pid)
        await serves(port, {"b1"})
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)
        await asyncio.to_thread(master.wait, 10)
