"""HAProxy's directory removed while it runs (a tmp cleaner, a config tool purging it), against
a real HAProxy 2.6 under load (synapse.haproxy.replacement):

- the synapse that runs it: the next change that needs a reload, and the next one made at
  runtime, are served, and no request fails. Before, every runtime command and reload
  failed with ENOENT, for good: HAProxy kept its old servers until someone killed it;
- a synapse restarted meanwhile adopts the master whose sockets are gone and replaces it,
  with the listening sockets taken out of its workers: no request fails either. Before, it
  waited `reload_timeout`, logged `haproxy_adopt_failed` and refused to start HAProxy
  beside it, for good. Where the kernel does not let it take them, the new master binds
  beside the old one (SO_REUSEPORT) and serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

from haproxy_helpers import eventually, server, serves, service, web
from haproxy_load import all_answered, under_load

from synapse.contract import ApplyOutcome
from synapse.haproxy import taken
from synapse.haproxy.adoption import running_masters
from testbed.process import free_port

CLIENTS = 4
AGE_S = 3.0  # the restarted synapse's reload_timeout: a master this old is not starting


def _masters(sockdir: Path) -> tuple[int, ...]:
    return running_masters(sockdir / "haproxy.cfg", sockdir / "haproxy-master.sock")


def _api(port: int, backend):
    return service("api", [server("127.0.0.1", backend.port, backend.name)], port=port)


def _kill_all(sockdir: Path) -> None:
    """Whatever happened, no HAProxy of this test outlives it (and no other process is hit:
    only masters running this test's config, with their process groups)."""
    for pid in _masters(sockdir):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # (a master started by synapse leads its group)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def _replaced(sockdir: Path, old: int, new: int | None) -> None:
    """The old master gone, the new one alone, its sockets back."""

    async def done() -> bool:
        alone = _masters(sockdir) == (new,)  # (a zombie is no master: it has no command line)
        files = {"haproxy.sock", "haproxy-master.sock"} <= set(os.listdir(sockdir))
        return alone and files

    await eventually(done, f"master {old} replaced by {new}, its sockets back")


async def _changes_served(controller, port: int, api_port: int, b1, b2) -> None:
    """A new service (a reload), then web's server b1 -> b2 (runtime commands only)."""
    result = await controller.apply([web(port, [b1]), _api(api_port, b2)], "a new service")
    assert result.reload is ApplyOutcome.DONE, result
    await serves(api_port, {"b2"})
    result = await controller.apply([web(port, [b2]), _api(api_port, b2)], "web b1 -> b2")
    assert result.reload is ApplyOutcome.NONE and result.ops, result
    await serves(port, {"b2"})


async def test_a_removed_directory_costs_no_request_and_the_next_changes_are_served(
    managed_factory, http_backend_factory, sockdir
):
    """The new master takes synapse's copies of the listening sockets (``-x``)."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    controller = managed_factory()
    await controller.apply([web(port, [b1])], "first")
    await serves(port, {"b1"})
    old = controller._managed.master_pid
    assert old is not None
    try:
        with under_load(port, CLIENTS) as counts:
            await asyncio.sleep(0.3)
            shutil.rmtree(sockdir)
            await asyncio.sleep(0.3)
            await _changes_served(controller, port, api_port, b1, b2)
            new = controller._managed.master_pid
            assert new != old
            await _replaced(sockdir, old, new)
        all_answered(counts, CLIENTS)
        assert controller._managed.listeners.addresses  # copies of the new one's
        assert controller.health() == []
    finally:
        _kill_all(sockdir)


async def _left_socketless(managed_factory, port: int, b1, sockdir: Path) -> int:
    """A synapse ran HAProxy, its directory was removed, and it stopped leaving HAProxy
    serving (as a restart does); the master's pid."""
    first = managed_factory(managed={"stats": {"enabled": False}, "stop_on_exit": False})
    await first.apply([web(port, [b1])], "first")
    await serves(port, {"b1"})
    old = first._managed.master_pid
    assert old is not None
    shutil.rmtree(sockdir)
    await first.stop()
    await asyncio.sleep(AGE_S)  # (older than `reload_timeout`: not one still starting)
    return old


async def test_a_restarted_synapse_replaces_the_master_whose_sockets_are_gone(
    managed_factory, http_backend_factory, sockdir
):
    """It takes the listening sockets out of the old workers (``taken``) and hands them to
    the new master: no request fails."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    try:
        old = await _left_socketless(managed_factory, port, b1, sockdir)
        second = managed_factory(reload_timeout=AGE_S)
        with under_load(port, CLIENTS) as counts:
            await asyncio.sleep(0.3)
            await second.start()
            assert second._managed.alive and second._managed.master_pid == old  # adopted
            await _changes_served(second, port, api_port, b1, b2)
            new = second._managed.master_pid
            assert new != old
            await _replaced(sockdir, old, new)
        all_answered(counts, CLIENTS)
        assert second.health() == []
    finally:
        _kill_all(sockdir)


async def test_without_their_copies_the_new_master_binds_beside_the_old_one(
    managed_factory, http_backend_factory, sockdir, monkeypatch, caplog
):
    """Where the kernel refuses ``pidfd_getfd`` (Yama, no CAP_SYS_PTRACE in a container),
    the new master binds the ports beside the old one (SO_REUSEPORT) and serves."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()

    def refused(master: int) -> list:
        raise PermissionError(1, "pidfd_getfd: Operation not permitted")

    try:
        old = await _left_socketless(managed_factory, port, b1, sockdir)
        monkeypatch.setattr(taken, "take_listeners", refused)
        second = managed_factory(reload_timeout=AGE_S)
        with caplog.at_level(logging.WARNING, logger="synapse.haproxy.managed"):
            await second.start()
            await _changes_served(second, port, api_port, b1, b2)
        missing = [r for r in caplog.records if r.message == "haproxy_sockets_missing"]
        assert [r.smartstack_fields["listeners"] for r in missing] == [
            "bound beside its own ([Errno 1] pidfd_getfd: Operation not permitted)"
        ]
        await _replaced(sockdir, old, second._managed.master_pid)
        await serves(port, {"b2"})
    finally:
        _kill_all(sockdir)
