"""After synapse reloads or starts HAProxy (real HAProxy, managed): what the reloading
apply reads and plans at once, and the background sweep that reads the rest."""

from __future__ import annotations

import asyncio
import os
import signal

from haproxy_helpers import eventually, read_back, server, serves, service, web
from prometheus_client import CollectorRegistry
from test_controller_owed import file_text, grown, others, started

from synapse.contract import ApplyOutcome
from synapse.haproxy import view as view_module
from synapse.haproxy.runtime import MasterClient, RuntimeClient
from testbed.process import free_port


async def test_the_starting_apply_plans_the_states_the_state_file_restored_in_what_changed(
    managed_factory, http_backend_factory
):
    """b2 left (kept in maintenance, so in the state file) and synapse stopped with its
    HAProxy. b2 came back meanwhile: the next synapse starts HAProxy, which restores MAINT
    for b2 from the state file. The starting apply itself reads and plans the backends
    that changed since the file (b2 serves at once); the untouched others are left to the
    background sweep (stopped here: the apply alone must do it)."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    others = [
        service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], backend_only=True)
        for i in range(40)
    ]  # fmt: skip (more than a sweep's part: the others are not read at once)
    first = managed_factory()
    await first.apply([web(port, [b1, b2]), *others], "t")
    await first.apply([web(port, [b1]), *others], "t")  # b2 kept, in maintenance
    await serves(port, {"b1"})
    state_file = first.settings.state_file
    assert state_file is not None
    gone = f"b2_127.0.0.1:{b2.port}"

    async def dumped() -> bool:  # (the state dumper's, every second)
        return any(
            line.split()[3:7:3] == [gone, "1"] for line in state_file.read_text().splitlines()[2:]
        )

    await eventually(dumped, "b2 in maintenance in the server-state file")
    await first.stop()  # (stop_on_exit: HAProxy stops too)

    controller = managed_factory()
    await controller.start()
    await controller._reader.stop_sweeping()
    result = await controller.apply([web(port, [b1, b2]), *others], "t")
    assert result.reload is ApplyOutcome.DONE and result.error is None
    assert controller._reader.view.full_reads == 0  # the others wait for the sweep
    states = await controller.backend_servers("web")
    assert states is not None and set(states.values()) == {"UP"}, states
    await serves(port, {"b1", "b2"})


async def test_a_reload_during_a_background_sweep_does_not_read_everything(
    managed_factory, http_backend_factory, monkeypatch
):
    """A sweep's connection opened before a reload reaches the old worker: its answers
    (another pid) must not make synapse distrust the new process's view (a whole read under
    the lock), and every backend is still read and planned after the reload."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory(restart_interval=0.0)
    others = [
        service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], backend_only=True)
        for i in range(30)
    ]  # fmt: skip
    await controller.apply([web(port, [b1]), *others], "t")
    await read_back(controller)
    view = controller._reader.view
    monkeypatch.setattr(view_module, "SWEEP_PART", 1)  # a slow sweep: one backend a part...
    monkeypatch.setattr(view_module, "SWEEP_PACE", 1000.0)  # ...and long pauses after each
    sweeps, view.full_every = view.sweeps, 0.0
    parts = []
    read_part = view.read_part

    async def counted(client, backends, *rest):
        parts.append(await read_part(client, backends, *rest))
        return parts[-1]

    monkeypatch.setattr(view, "read_part", counted)
    controller._reader._kick.set()  # (the sweep waits for its period: sweep now)

    async def sweeping() -> bool:
        return len(parts) >= 3  # a few parts in

    await eventually(sweeping, "a background sweep under way")
    added = service("api", [server("127.0.0.1", b2.port, "a")], port=free_port())
    result = await controller.apply([web(port, [b1]), *others, added], "t")
    assert result.reload is ApplyOutcome.DONE
    monkeypatch.setattr(view_module, "SWEEP_PART", 25)
    monkeypatch.setattr(view_module, "SWEEP_PACE", 2.0)

    async def swept_again() -> bool:  # (the last part is merged before the sweep counts)
        return view.sweeps > sweeps and not view.unread

    await eventually(swept_again, "a whole sweep after the reload")
    assert view.full_reads == 0
    await serves(port, {"b1"})


async def test_a_bug_in_a_background_sweep_does_not_end_the_sweeping(
    managed_factory, http_backend_factory, monkeypatch
):
    """After a start only the sweep reads most backends: an unexpected error in one sweep
    is logged, everything is read again, and sweeping goes on (it is not lost for good)."""
    b1 = http_backend_factory("b1")
    port = free_port()
    controller = managed_factory()
    others = [
        service(f"s{i}", [server("127.0.0.1", b1.port, f"o{i}")], backend_only=True)
        for i in range(30)
    ]  # fmt: skip
    view = controller._reader.view
    read_part, failed = view.read_part, []

    async def once_broken(client, backends, *rest):
        if not failed:
            failed.append(backends)
            raise RuntimeError("a bug")
        return await read_part(client, backends, *rest)

    monkeypatch.setattr(view, "read_part", once_broken)
    await controller.apply([web(port, [b1]), *others], "t")
    await read_back(controller)
    assert failed and not view.unread
    view.full_every = 0.0
    sweeps = view.sweeps
    controller._reader._kick.set()

    async def swept_again() -> bool:
        return view.sweeps > sweeps

    await eventually(swept_again, "the next background sweep")


async def test_a_crashed_haproxy_restarts_like_a_start_not_read_whole_under_the_lock(
    managed_factory, http_backend_factory
):
    """A crashed HAProxy is started again from its files (``revive``) like a start: only
    the backends' names are read, and at once the backends runtime commands changed lately
    (the state file may predate them: here it still has b2 in maintenance, b2 came back
    after its last dump). The others are left to the background sweep (stopped here
    until the end): no whole `show servers state` read under the lock."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    others = [
        service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], backend_only=True)
        for i in range(60)
    ]  # fmt: skip (more than two parts of a sweep)
    controller = managed_factory(restart_interval=0.1)
    await controller.apply([web(port, [b1, b2]), *others], "t")
    await read_back(controller)
    await controller.apply([web(port, [b1]), *others], "t")  # b2 kept, in maintenance
    state_file = controller.settings.state_file
    assert state_file is not None
    gone = f"b2_127.0.0.1:{b2.port}"

    async def dumped() -> bool:  # (the state dumper's, every second)
        lines = state_file.read_text().splitlines()[2:]
        return any(line.split()[3:7:3] == [gone, "1"] for line in lines)

    await eventually(dumped, "b2 in maintenance in the server-state file")
    assert controller._dumper is not None
    await controller._dumper.stop()  # the state file keeps b2 in maintenance
    await controller._reader.stop_sweeping()
    await controller.apply([web(port, [b1, b2]), *others], "t")  # b2 back, at runtime
    await serves(port, {"b1", "b2"})
    view = controller._reader.view
    assert view.full_reads == 0
    pid = controller.status()["haproxy_pids"]["master"]
    os.killpg(pid, signal.SIGKILL)

    async def restarted() -> bool:
        master = controller.status()["haproxy_pids"]["master"]
        return master not in (None, pid) and controller.info.starts == 2 and view.valid

    await eventually(restarted, "the managed HAProxy to be started again")
    await serves(port, {"b1", "b2"})  # b2 read and set ready at once, not left in MAINT
    assert view.full_reads == 0 and len(view.unread) >= 50  # the others: the sweep's
    controller._reader.start_sweeping(
        controller._lock, controller._has_desired, controller._apply_locked
    )
    await read_back(controller)
    assert view.full_reads == 0
    states = controller.status()["backends"]
    assert all(len(states[f"s{i}"]) == 1 for i in range(60))
    assert {s["state"] for s in states["web"].values()} == {"UP"} and len(states["web"]) == 2


async def test_status_after_a_reload_lists_the_backends_not_read_yet(
    managed_factory, http_backend_factory
):
    """/status right after a reload: the backends the background sweep has not read from
    the new process yet (stopped here) are listed as unread, without servers (what synapse
    held for them is the old process's); once read, they have the new process's servers."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    others = [
        service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], backend_only=True)
        for i in range(40)
    ]  # fmt: skip (more than a sweep's part: not all read at once)
    controller = managed_factory(restart_interval=0.0)
    await controller.apply([web(port, [b1]), *others], "t")
    await read_back(controller)
    assert controller.status()["unread_backends"] == []
    await controller._reader.stop_sweeping()
    added = service("api", [server("127.0.0.1", b2.port, "a")], port=free_port())
    result = await controller.apply([web(port, [b1]), *others, added], "t")  # a reload
    assert result.reload is ApplyOutcome.DONE and controller.info.reloads == 1
    status = controller.status()
    unread = set(status["unread_backends"])
    assert {f"s{i}" for i in range(40)} <= unread and "web" in unread
    assert unread.isdisjoint(status["backends"])  # no servers shown for them
    controller._reader.start_sweeping(
        controller._lock, controller._has_desired, controller._apply_locked
    )
    await read_back(controller)
    status = controller.status()
    assert status["unread_backends"] == []
    assert all(len(status["backends"][f"s{i}"]) == 1 for i in range(40))
    assert set(status["backends"]["api"]) == {f"a_127.0.0.1:{b2.port}"}


async def test_the_state_dumper_keeps_its_connection_and_follows_an_outside_reload(
    managed_factory, http_backend_factory
):
    """A round a second reads on the connection kept from the last round (no connection a
    second, idle); after a reload synapse did not make, that connection is the old,
    stopping worker's: the next round reads the new worker (a whole dump of it)."""
    b1 = http_backend_factory("b1")
    controller = managed_factory()
    await controller.apply([web(free_port(), [b1])], "t")
    dumper = controller._dumper
    assert dumper is not None

    async def dumped() -> bool:
        return dumper._blocks is not None

    await eventually(dumped, "the first state dump")
    await asyncio.sleep(2.5)  # (rounds on the kept connection since)
    asked, ask_kept = [], dumper.runtime.ask_kept

    async def counted(commands: list[str]) -> list[str]:
        asked.append(commands[0])
        return await ask_kept(commands)

    dumper.runtime.ask_kept = counted  # type: ignore[method-assign]
    connections, whole = dumper.runtime.connections, dumper.whole_dumps
    await asyncio.sleep(2.5)  # two rounds or more
    assert dumper.runtime.connections == connections and dumper.whole_dumps == whole
    assert len(asked) >= 2, asked  # rounds did run, on the kept connection
    old = dumper._blocks.pid
    await MasterClient(str(controller.settings.master_socket)).reload()

    async def new_worker_dumped() -> bool:
        blocks = dumper._blocks
        return blocks is not None and blocks.pid != old and dumper.whole_dumps > whole

    await eventually(new_worker_dumped, "a dump of the new worker")
    state = await RuntimeClient(str(controller.settings.runtime_sockets[0])).info()
    assert dumper._blocks.pid == state["Pid"]


async def test_while_the_sweep_reads_a_reload_s_backends_a_change_of_servers_goes_express(
    managed_factory,
):
    """The sweep after a reload or start reads every backend (2-3 s at 1,000): meanwhile a
    change of servers goes express once the apply has read its backends (those not read
    since the reload first: the view held the old process's servers there), its commands
    are the whole plan's (no server HAProxy has added again), and the owed render is paid
    without reading everything, the other backends still waiting for the sweep (stopped)."""
    controller = managed_factory(CollectorRegistry(), restart_interval=0.0)
    services = others(40)  # (more than a sweep's part)
    await started(controller, services)
    view, express = controller._reader.view, controller._express
    await controller._reader.stop_sweeping()  # the reload's backends stay unread
    services = [*services, service("api", [server("127.0.0.1", 23000, "a")], port=free_port())]
    assert (await controller.apply(services, "reload")).reload is ApplyOutcome.DONE
    full_reads, sent = view.full_reads, express.sent
    assert "s0" in view.unread and "s1" in view.unread
    services = grown(services, 0, 23001, "n1")  # s0 read first; ends clean: ready
    first = await controller.apply(services, "after the reload")
    assert first.reload is ApplyOutcome.NONE and len(first.ops) == 2 and express.sent == sent
    for i, name in ((0, "n2"), (1, "n3")):  # s0 read already; s1 read by the apply first
        services = grown(services, i, 23002 + i, name)
        result = await controller.apply(services, name)
        assert result.reload is ApplyOutcome.NONE and result.error is None, result
        assert len(result.ops) == 2, result.ops  # add, ready: o1 is not added again
    assert express.sent == sent + 2 and "s2" in view.unread
    await controller.flush()  # the owed render: planned on what was read
    assert view.full_reads == full_reads and len(view.unread) > 30
    assert not controller._owed.owed and controller.health() == []
    for backend, names in (("s0", ("o0", "n1", "n2")), ("s1", ("o1", "n3"))):
        servers = await controller.backend_servers(backend)
        assert servers is not None and len(servers) == len(names), servers
        assert all(any(s.startswith(f"{n}_") for s in servers) for n in names), servers
        assert sum(f"server {n}_" in file_text(controller) for n in names) == len(names)
