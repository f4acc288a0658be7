"""A synapse restarted with its HAProxy's master socket, config file or binary changed, against
a real HAProxy 2.6 under load (synapse.haproxy.adoption, moved, binary_check):

- ``managed.master_socket_path`` moved: before, the restarted synapse found nothing on the new
  socket and started a second master beside the first (SO_REUSEPORT), which served on with
  a config nobody updated (a withdrawn server kept getting requests, 51 % of them failed
  after a redeploy). Now it adopts the old master by its pid and the first reload replaces it;
- ``config_file_path`` moved (the master socket with it): before, the start was refused (the
  ports were held), for good, and the old master served every request, never updated (100 %
  failed after a redeploy). Now the master a gone synapse left on our ports is adopted and
  replaced the same way; one a live synapse manages is still refused;
- ``managed.binary`` changed: before, the adopted master ran the old binary for good (its
  reloads re-execute it). Now the first reload replaces it with the configured one;
- synapse stopped during that replacement: before, the old master was never soft-stopped and
  served beside the new one for good. Now the stop waits for the replacement, and a master
  left beside the adopted one (a synapse killed then) is soft-stopped at the first reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from haproxy_helpers import eventually, managed_config, serves, service, web
from haproxy_load import all_answered, under_load
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import moved
from synapse.haproxy.adoption import running_masters
from synapse.haproxy.controller import HAProxyController
from testbed.process import free_port

CLIENTS = 4
LEFT = {"stats": {"enabled": False}, "stop_on_exit": False}  # (a restart leaves it serving)


@pytest.fixture
def otherdir() -> Iterator[Path]:
    """The directory ``config_file_path`` moves to (short: unix socket paths)."""
    path = Path(tempfile.mkdtemp(prefix="shm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _masters(*configs: Path) -> list[int]:
    return [pid for config in configs for pid in running_masters(config, None)]


def _kill_all(*configs: Path) -> None:
    """No HAProxy of this test outlives it (only masters running its configs are hit)."""
    for pid in _masters(*configs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _left_running(managed_factory, port: int, b1) -> int:
    """A synapse ran HAProxy and stopped, leaving it serving (a restart); the master's pid."""
    first = managed_factory(managed=LEFT)
    await first.apply([web(port, [b1])], "first")
    await serves(port, {"b1"})
    old = first._managed.master_pid
    assert old is not None
    await first.stop()
    return old


async def _replaced_alone(controller, old: int, *configs: Path) -> int:
    """A reload (a new service) replaced ``old``: the new master is the only one left."""
    api_port = free_port()
    b = next(s for s in controller._desired if s.name == "web").servers
    api = service("api", b, port=api_port)
    # (the reload gate: restart_interval after the last reload, which a fast host is within)
    await asyncio.sleep(controller._gate.due_in())
    result = await controller.apply([*controller._desired, api], "a new service")
    assert result.reload is ApplyOutcome.DONE, result
    new = controller._managed.master_pid
    assert new not in (None, old)

    async def alone() -> bool:
        return _masters(*configs) == [new]

    await eventually(alone, f"master {old} replaced by {new}, alone")
    return new


def _gone_synapse(socket: Path) -> None:
    """The record beside ``socket`` names a synapse that exited (this test is the one that
    started the master: in production, the restarted synapse is another process)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = json.loads(moved.owner_path(socket).read_text())
    moved.owner_path(socket).write_text(json.dumps({**record, "synapse_pid": gone.pid}))


def _no_failure(counts) -> None:
    all_answered(counts, CLIENTS)


async def _restarted_with(managed_factory, b1, config: Path, **managed) -> tuple[int, int]:
    """A synapse left HAProxy running; one restarted with ``managed`` changed adopts its
    master and replaces it at its first reload, under load: (old, new) masters."""
    port = free_port()
    old = await _left_running(managed_factory, port, b1)
    second = managed_factory(managed={**LEFT, **managed})
    with under_load(port, CLIENTS) as counts:
        await asyncio.sleep(0.3)
        await second.start()
        assert second._managed.master_pid == old  # adopted (before, sock: a second master)
        await second.apply([web(port, [b1])], "restarted")
        new = await _replaced_alone(second, old, config)
    _no_failure(counts)
    assert second.health() == []
    return old, new


async def test_a_moved_master_socket_adopts_the_old_master_and_replaces_it(
    managed_factory, http_backend_factory, sockdir
):
    config = sockdir / "haproxy.cfg"
    (sockdir / "run").mkdir()
    try:
        moved_to = str(sockdir / "run" / "m.sock")
        await _restarted_with(
            managed_factory, http_backend_factory("b1"), config, master_socket_path=moved_to
        )
    finally:
        _kill_all(config)


async def test_a_moved_config_file_adopts_the_master_left_on_our_ports_and_replaces_it(
    managed_factory, http_backend_factory, sockdir, otherdir, caplog
):
    b1 = http_backend_factory("b1")
    port = free_port()
    configs = sockdir / "haproxy.cfg", otherdir / "haproxy.cfg"
    second = HAProxyController(managed_config(otherdir, managed=LEFT), CollectorRegistry())
    try:
        old = await _left_running(managed_factory, port, b1)
        _gone_synapse(sockdir / "haproxy-master.sock")
        with under_load(port, CLIENTS) as counts, caplog.at_level(logging.WARNING):
            await asyncio.sleep(0.3)
            await second.start()
            result = await second.apply([web(port, [b1])], "restarted")
            assert result.reload is ApplyOutcome.DONE, result  # (before: the ports were held)
            await _replaced_alone(second, old, *configs)
        _no_failure(counts)
        moves = [r for r in caplog.records if r.message == "haproxy_master_moved"]
        assert [r.smartstack_fields["master_pid"] for r in moves] == [old]
        assert second.health() == []
    finally:
        await second.stop()
        _kill_all(*configs)


async def test_a_master_a_live_synapse_manages_is_not_taken(
    managed_factory, http_backend_factory, sockdir, otherdir
):
    """Two synapses on the same ports: the second's service is left out (its port is taken),
    the first keeps its master."""
    b1 = http_backend_factory("b1")
    port = free_port()
    configs = sockdir / "haproxy.cfg", otherdir / "haproxy.cfg"
    # (no copies of its listeners in this process: the test's own pid would be a clash owner
    # and the master's owner record never read)
    first = managed_factory(
        managed={"stats": {"enabled": False}, "stop_on_exit": True, "hold_listeners": False}
    )
    second = HAProxyController(managed_config(otherdir), CollectorRegistry())
    try:
        await first.apply([web(port, [b1])], "first")
        master = first._managed.master_pid
        await second.start()
        result = await second.apply([web(port, [b1])], "second")
        assert "already bound" in str(result.error)
        assert "web" in second.status()["isolated_services"]
        await second.flush()
        assert f":{port}" not in configs[1].read_text()  # (it binds nothing of the first's)
        assert first._managed.master_pid == master and master in _masters(*configs)
        assert moved.owner_path(sockdir / "haproxy-master.sock").exists()
    finally:
        await second.stop()
        _kill_all(*configs)


async def test_a_changed_binary_replaces_the_adopted_master_at_the_first_reload(
    managed_factory, http_backend_factory, sockdir, caplog
):
    b1 = http_backend_factory("b1")
    config = sockdir / "haproxy.cfg"
    copy = sockdir / "haproxy-new"
    shutil.copy2(shutil.which("haproxy") or "/usr/sbin/haproxy", copy)
    try:
        with caplog.at_level(logging.WARNING):
            _old, new = await _restarted_with(managed_factory, b1, config, binary=str(copy))
        assert os.readlink(f"/proc/{new}/exe") == str(copy)  # (before: the old binary, for good)
        changed = [r for r in caplog.records if r.message == "haproxy_binary_changed"]
        running = os.path.realpath(shutil.which("haproxy") or "haproxy")
        assert [r.smartstack_fields["running"] for r in changed] == [running]
    finally:
        _kill_all(config)


async def _has_worker(config: Path, masters: int) -> bool:
    """``masters`` masters run ``config``, each with a worker (running_masters needs one)."""
    return len(running_masters(config, None)) == masters


async def test_a_stop_during_the_replacement_leaves_one_master_the_new_one(
    managed_factory, http_backend_factory, sockdir, monkeypatch
):
    """SIGTERM (the apply task cancelled, then the controller stopped) once the replacing
    master has its worker. Before, the old master was never soft-stopped: both served the
    ports for good, the old one with a config nobody updated."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    config = sockdir / "haproxy.cfg"
    copy = sockdir / "haproxy-new"
    shutil.copy2(shutil.which("haproxy") or "/usr/sbin/haproxy", copy)
    port, api_port = free_port(), free_port()
    try:
        old = await _left_running(managed_factory, port, b1)
        second = managed_factory(managed={**LEFT, "binary": str(copy)})
        await second.start()
        assert second._managed.master_pid == old and second._managed._stale
        launch = second._managed._launch

        async def launch_then_linger(*args: object, **kwargs: object) -> None:
            await launch(*args, **kwargs)  # type: ignore[arg-type]
            # Both masters with a worker, the old one not retired yet: on a loaded machine
            # that moment passed between two of the test's polls (a CI timeout).
            await asyncio.sleep(1.0)

        monkeypatch.setattr(second._managed, "_launch", launch_then_linger)
        api = service("api", web(port, [b1]).servers, port=api_port)
        task = asyncio.create_task(second.apply([web(port, [b1]), api], "a new service"))
        await eventually(lambda: _has_worker(config, 2), "the replacing master's worker")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await second.stop()  # (stop_on_exit false: left running)
        left = await eventually(lambda: _has_worker(config, 1), "one master left")
        assert left and _masters(config) != [old]  # (before: [old, new], for good)
        third = managed_factory(managed={**LEFT, "binary": str(copy)})
        await third.start()
        await third.apply([web(port, [b2]), api], "b1 withdrawn")
        await serves(port, {"b2"})  # (before: the old master sent b1 3 of 4 requests)
        assert _masters(config) == [third._managed.master_pid]
    finally:
        _kill_all(config)


async def test_a_master_beside_the_adopted_one_is_soft_stopped_at_the_first_reload(
    managed_factory, http_backend_factory, sockdir, caplog
):
    """A synapse killed (SIGKILL, OOM) while its replacing master started left two masters
    on our config and socket; the next one adopted the one that answers and left the other
    serving for good."""
    b1 = http_backend_factory("b1")
    config, socket = sockdir / "haproxy.cfg", sockdir / "haproxy-master.sock"
    port, api_port = free_port(), free_port()
    beside: subprocess.Popen[bytes] | None = None
    try:
        old = await _left_running(managed_factory, port, b1)
        args = ["-W", "-db", "-S", f"{socket},mode,600", "-f", str(config)]
        beside = subprocess.Popen(  # (binds the ports beside it: SO_REUSEPORT)
            [shutil.which("haproxy") or "haproxy", *args], start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await eventually(lambda: _has_worker(config, 2), "a second master")
        second = managed_factory(managed=LEFT)
        with caplog.at_level(logging.WARNING):
            await second.start()
        assert second._managed.master_pid == beside.pid  # (it answers on our socket)
        strays = [r for r in caplog.records if r.message == "haproxy_masters_beside"]
        assert [r.smartstack_fields["masters"] for r in strays] == [[old]]
        api = service("api", web(port, [b1]).servers, port=api_port)
        result = await second.apply([web(port, [b1]), api], "a new service")
        assert result.reload is ApplyOutcome.DONE, result
        await eventually(lambda: _has_worker(config, 1), "one master left")
        assert _masters(config) == [beside.pid]  # (before: [old, beside], for good)
    finally:
        _kill_all(config)
        if beside is not None:
            beside.wait(5)


def test_a_master_is_taken_only_when_its_record_names_a_synapse_that_is_gone(
    tmp_path: Path,
) -> None:
    socket = tmp_path / "m.sock"
    code = "import time; time.sleep(30)"
    master = subprocess.Popen([sys.executable, "-c", code, "-W", "-S", f"{socket},mode,600"])
    try:
        assert not moved.orphaned(master.pid)  # no record: started by hand, or another's
        moved.record_owner(socket, master.pid)  # this (live) synapse manages it
        assert not moved.orphaned(master.pid)
        _gone_synapse(socket)
        assert moved.orphaned(master.pid)
        record = json.loads(moved.owner_path(socket).read_text())
        moved.owner_path(socket).write_text(json.dumps({**record, "master_pid": master.pid + 1}))
        assert not moved.orphaned(master.pid)  # (a record of another master)
    finally:
        master.kill()
        master.wait()
