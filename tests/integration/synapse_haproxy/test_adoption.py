"""A restarted synapse takes over the HAProxy that serves, against a real HAProxy 2.6:

- a synapse that stopped or died between making a candidate the config file and HAProxy's
  reload of it: the next one reloads (the file is not what HAProxy runs);
- a file something else wrote since (an older synapse after a rollback): one reload too;
  synapse's own writes of it do not cost the next synapse one;
- a master socket that does not answer at once (the master re-executes for a reload):
  adopted all the same, and never a second HAProxy beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from haproxy_helpers import server, serves, service, web

from smartstack.tasks import cancel_and_wait
from synapse.atomic import write_atomic
from synapse.contract import ApplyOutcome
from synapse.haproxy.runtime import MasterClient
from synapse.haproxy.sockets import HAProxySocketError
from testbed.process import free_port


def _ours(sockdir: Path) -> dict[int, int]:
    """pid -> parent pid of every process running this test's config file."""
    config = str(sockdir / "haproxy.cfg").encode()
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and config in (entry / "cmdline").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                found[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
        except OSError:
            continue
    return found


def _masters(sockdir: Path) -> list[int]:
    ours = _ours(sockdir)
    return sorted(pid for pid, parent in ours.items() if parent not in ours)


def _kill_all(sockdir: Path) -> None:
    """Nothing of this test may outlive it, even when it failed half-way."""
    for pid in _ours(sockdir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _binds(sockdir: Path) -> list[str]:
    lines = (sockdir / "haproxy.cfg").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("bind ")]


async def test_a_stop_during_the_reload_puts_the_previous_file_back_for_the_next_synapse(
    managed_factory, http_backend_factory, sockdir, monkeypatch
):
    """SIGTERM while a reload runs: the daemon cancels the apply, the controller stops and
    leaves HAProxy serving. The file must say what HAProxy runs (the previous config), so
    the next synapse reloads for the port change (was: the file said the new port, and the
    next synapse saw nothing to do: the new port was never bound)."""
    b1 = http_backend_factory("b1")
    p1, p2 = free_port(), free_port()
    try:
        first = managed_factory(
            managed={"stats": {"enabled": False}, "stop_on_exit": False}, restart_interval=0
        )  # (no rate limit: the apply reloads, not a pending reload after it)
        await first.start()
        assert (await first.apply([web(p1, [b1])], "first")).reload is ApplyOutcome.DONE
        await serves(p1, {"b1"})

        entered: list[asyncio.Task | None] = []
        reloading = asyncio.Event()

        async def hangs(self: MasterClient) -> str:
            entered.append(asyncio.current_task())
            reloading.set()
            await asyncio.Event().wait()  # cancelled here, as by SynapseDaemon.stop()
            return ""

        monkeypatch.setattr(MasterClient, "reload", hangs)
        task = asyncio.create_task(first.apply([web(p2, [b1])], "port change"))
        await asyncio.wait_for(reloading.wait(), 20)
        assert len(entered) == 1  # (the apply's own task: cancelled with it)
        await cancel_and_wait(task)
        await first.stop()
        monkeypatch.undo()
        assert _binds(sockdir) == [f"bind localhost:{p1}"]  # what HAProxy runs

        second = managed_factory()
        await second.start()
        result = await second.apply([web(p2, [b1])], "restart")
        assert result.reload is ApplyOutcome.DONE, result
        await serves(p2, {"b1"})
        await second.stop()
        assert _masters(sockdir) == []
    finally:
        _kill_all(sockdir)


async def _reloads_once(managed_factory, port: int, backends) -> Any:
    """A synapse started beside an HAProxy that does not run the file (it says ``port``):
    it adopts HAProxy, reloads once and serves ``port``; the controller."""
    controller = managed_factory()
    await controller.start()
    result = await controller.apply([web(port, backends)], "restart")
    assert result.reload is ApplyOutcome.DONE, result
    assert controller.info.starts == 0 and controller.info.reloads == 1  # adopted
    await serves(port, {b.name for b in backends})
    return controller


DYING_SYNAPSE = """
import asyncio, os, sys
from pathlib import Path
sys.path.insert(0, {helpers!r})
from haproxy_helpers import managed_config, server, service
from prometheus_client import CollectorRegistry
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.runtime import MasterClient

def web(port):
    return [service("web", [server("127.0.0.1", {backend}, "b1")], port=port)]

async def main():
    config = managed_config(Path({directory!r}), restart_interval=0)  # (the apply reloads)
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    print((await controller.apply(web({p1}), "first")).reload.value, flush=True)

    async def killed(self):
        os._exit(137)  # OOM, kill -9: after the file swap, before the reload reached HAProxy

    MasterClient.reload = killed
    await controller.apply(web({p2}), "port change")

asyncio.run(main())
"""


async def test_a_synapse_killed_between_the_file_and_the_reload_is_followed_by_a_reload(
    managed_factory, http_backend_factory, sockdir
):
    """The file says the candidate, HAProxy runs the config before it: the marker beside the
    file (``<config>.loaded``: installing) makes the next synapse reload once."""
    b1 = http_backend_factory("b1")
    p1, p2 = free_port(), free_port()
    script = DYING_SYNAPSE.format(
        helpers=str(Path(__file__).parents[2] / "helpers"), directory=str(sockdir),
        backend=b1.port, p1=p1, p2=p2,
    )  # fmt: skip
    try:
        old = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert old.returncode == 137 and old.stdout.strip() == "done", old.stderr[-2000:]
        assert _binds(sockdir) == [f"bind localhost:{p2}"]  # the file is ahead of HAProxy
        await serves(p1, {"b1"})

        controller = await _reloads_once(managed_factory, p2, [b1])
        # Confirmed: a synapse restarted now trusts the file again (no second reload).
        await controller.stop()  # (stop_on_exit: true)
        assert _masters(sockdir) == []
    finally:
        _kill_all(sockdir)


async def test_a_file_another_writer_changed_since_synapse_left_is_reloaded(
    managed_factory, http_backend_factory, sockdir
):
    """After a rollback, an older synapse (it knows no ``<config>.loaded``) wrote web's new
    port into the file and died before its reload. The marker still said ``loaded``: the
    next synapse trusted the file and never bound the port (refused for the 28 s watched,
    0 reloads). The marker names the file it vouches for: another one, one reload."""
    b1 = http_backend_factory("b1")
    p1, p2 = free_port(), free_port()
    config = sockdir / "haproxy.cfg"
    try:
        await _left_serving(managed_factory, p1, [b1])
        moved = config.read_text().replace(f"bind localhost:{p1}", f"bind localhost:{p2}")
        write_atomic(config, moved)  # (the older synapse's write; its reload never came)
        await serves(p1, {"b1"})
        await _reloads_once(managed_factory, p2, [b1])
    finally:
        _kill_all(sockdir)


async def test_synapse_s_own_writes_of_the_file_keep_the_marker_trusted(
    managed_factory, http_backend_factory, sockdir
):
    """A server added at runtime rewrites the file (no reload): the marker names the new
    file, so the synapse restarted after it plans at runtime again, without a reload."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    kept = {"managed": {"stats": {"enabled": False}, "stop_on_exit": False}}
    try:
        await _left_serving(managed_factory, port, [b1])
        second = managed_factory(**kept)
        await second.start()
        result = await second.apply([web(port, [b1, b2])], "a server added")
        assert result.reload is ApplyOutcome.NONE, result
        await second.stop()  # (the file on disk: the marker names it)
        assert f"127.0.0.1:{b2.port}" in (sockdir / "haproxy.cfg").read_text()

        third = managed_factory()
        await third.start()
        result = await third.apply([web(port, [b1, b2])], "restart")
        assert result.reload is ApplyOutcome.NONE, result
        await serves(port, {"b1", "b2"})
    finally:
        _kill_all(sockdir)


def _fails_first(client: MasterClient, calls: int | None) -> None:
    """``client``'s first ``calls`` `show proc` (None: all) fail as while the master
    re-executes itself for a reload."""
    real = client.show_proc
    count = 0

    async def flaky():
        nonlocal count
        count += 1
        if calls is None or count <= calls:
            raise HAProxySocketError("connection refused (the master re-executes)")
        return await real()

    client.show_proc = flaky  # type: ignore[method-assign]


def _api(port: int, backend):
    return service("api", [server("127.0.0.1", backend.port, backend.name)], port=port)


async def _left_serving(managed_factory, port: int, backends) -> int:
    """A synapse started HAProxy and exited leaving it serving; its master's pid."""
    first = managed_factory(managed={"stats": {"enabled": False}, "stop_on_exit": False})
    await first.start()
    assert (await first.apply([web(port, backends)], "first")).reload is ApplyOutcome.DONE
    await serves(port, {b.name for b in backends})
    master = first._managed.master_pid
    await first.stop()
    assert master is not None
    return master


async def test_an_unanswered_show_proc_at_start_is_asked_again_and_haproxy_adopted(
    managed_factory, http_backend_factory, sockdir
):
    """The adopting synapse's first `show proc` fails: it asks again and adopts (was: it
    started a second master beside the first at the next reload, the first kept a share of
    the connections and outlived synapse)."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    try:
        master = await _left_serving(managed_factory, port, [b1])
        controller = managed_factory()
        _fails_first(controller._managed.master, 1)
        await controller.start()
        result = await controller.apply([web(port, [b1]), _api(api_port, b2)], "a new service")
        assert result.reload is ApplyOutcome.DONE, result
        await serves(api_port, {"b2"})
        assert _masters(sockdir) == [master]
        assert controller.info.starts == 0
        await controller.stop()  # (stop_on_exit: true)
        assert _ours(sockdir) == {}
    finally:
        _kill_all(sockdir)


async def test_a_start_adopts_the_haproxy_that_runs_our_config_instead_of_a_second_one(
    managed_factory, http_backend_factory, sockdir
):
    """The adoption at start failed (no answer within reload_timeout), the master answers
    later: the start a change needs adopts and reloads it instead of starting another."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    try:
        master = await _left_serving(managed_factory, port, [b1])
        controller = managed_factory(reload_timeout=1.0)
        client = controller._managed.master
        real = client.show_proc
        _fails_first(client, None)
        await controller.start()  # (haproxy_adopt_failed)
        assert not controller._managed.alive
        client.show_proc = real  # type: ignore[method-assign]
        result = await controller.apply([web(port, [b1]), _api(api_port, b2)], "new service")
        assert result.reload is ApplyOutcome.DONE, result
        await serves(api_port, {"b2"})
        assert _masters(sockdir) == [master]
        await controller.stop()
        assert _ours(sockdir) == {}
    finally:
        _kill_all(sockdir)


async def test_a_master_that_never_answers_is_not_joined_by_a_second_one(
    managed_factory, http_backend_factory, sockdir
):
    """Our master runs but its socket never answers: the start is refused, said so on
    /health, and HAProxy keeps serving alone."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    try:
        master = await _left_serving(managed_factory, port, [b1])
        controller = managed_factory(reload_timeout=1.0)
        _fails_first(controller._managed.master, None)
        await controller.start()
        result = await controller.apply([web(port, [b1]), _api(api_port, b2)], "new service")
        assert result.reload is ApplyOutcome.FAILED, result
        assert "not starting a second one" in (result.error or "")
        assert any("not starting a second one" in line for line in controller.health())
        assert _masters(sockdir) == [master]
        await serves(port, {"b1"})
    finally:
        _kill_all(sockdir)


async def test_a_binary_named_otherwise_is_adopted_after_a_restart(
    managed_factory, http_backend_factory, sockdir
):
    """managed.binary `lb -> haproxy` (a symlink or a build of another name: comm is the
    name executed). Review s28/cr-hapct: the restarted synapse refused to adopt its own
    master ("pid N ... is lb, not HAProxy") and every reload failed after: a new service
    never served. Now it is told by the file it runs."""
    b1 = http_backend_factory("b1")
    p1, p2 = free_port(), free_port()
    binary = sockdir / "lb"
    binary.symlink_to(shutil.which("haproxy") or "/usr/sbin/haproxy")
    kept = {"managed": {"stats": {"enabled": False}, "stop_on_exit": False,
                        "binary": str(binary)}}  # fmt: skip
    try:
        first = managed_factory(**kept)
        await first.start()
        assert (await first.apply([web(p1, [b1])], "first")).reload is ApplyOutcome.DONE
        await serves(p1, {"b1"})
        master = first._managed.master_pid
        await first.stop()
        second = managed_factory(**kept)
        await second.start()
        assert second._managed.master_pid == master  # adopted, none started beside it
        other = service("other", [server("127.0.0.1", b1.port, "b1")], port=p2)
        result = await second.apply([web(p1, [b1]), other], "a service added")
        assert result.reload is ApplyOutcome.DONE, result
        await serves(p2, {"b1"})
        assert _masters(sockdir) == [master]
    finally:
        _kill_all(sockdir)
