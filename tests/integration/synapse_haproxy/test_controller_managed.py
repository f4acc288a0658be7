"""The controller in managed mode against a real HAProxy 2.6, with real HTTP traffic through it:
runtime changes without a reload, drift and the sweep, the runtime connections (reloads,
crashes and adoption: test_controller_managed_reloads.py)."""

from __future__ import annotations

import json
from pathlib import Path

from haproxy_helpers import (
    eventually,
    metric,
    read_back,
    server,
    serves,
    service,
    show_proc,
    web,
)
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from synapse.haproxy import reader as reader_module
from synapse.haproxy.runtime import MasterClient, RuntimeClient
from synapse.haproxy.sockets import SocketUnavailable
from testbed.process import free_port


async def test_add_remove_readd_cause_no_reload(managed_factory, http_backend_factory):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry)
    await controller.start()

    first = await controller.apply([web(port, [b1], server_options="check inter 300ms")], "t")
    assert first.reload is ApplyOutcome.DONE and controller.info.starts == 1
    await serves(port, {"b1"})
    started = await show_proc(controller)

    steps = [([b1, b2], {"b1", "b2"}), ([b1], {"b1"}), ([b1, b2, b3], {"b1", "b2", "b3"}),
             ([b3], {"b3"}), ([b1, b2, b3], {"b1", "b2", "b3"})]  # fmt: skip
    for members, expected in steps:
        result = await controller.apply(
            [web(port, members, server_options="check inter 300ms")], "t"
        )
        assert result.reload is ApplyOutcome.NONE, result
        assert result.ops
        await serves(port, expected)

    assert controller.info.reloads == 0
    now = await show_proc(controller)
    assert now.reloads == started.reloads and now.workers == started.workers
    assert metric(registry, "synapse_haproxy_plan_operations_total", kind="add_server") == 2
    assert metric(registry, "synapse_haproxy_plan_operations_total", kind="enable_health") == 2
    # The file follows runtime changes, so a restart would start from the same servers.
    await controller.flush()  # (written in the background)
    text = Path(controller.settings.config_path).read_text()
    assert all(f"127.0.0.1:{b.port} " in text for b in (b1, b2, b3))
    status = json.loads(json.dumps(controller.status()))  # JSON-ready for /status
    assert status["reloads"] == 0 and status["last_ops"]
    assert {s["state"] for s in status["backends"]["web"].values()} == {"UP"}


async def test_remove_servers_delete(managed_factory, http_backend_factory):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory(remove_servers="delete")
    await controller.apply([web(port, [b1, b2])], "t")
    runtime = RuntimeClient(controller.settings.runtime_sockets[0])

    result = await controller.apply([web(port, [b1])], "t")
    assert result.reload is ApplyOutcome.NONE
    assert any(op.startswith("del server") for op in result.ops)
    assert set((await runtime.running_backends())["web"]) == {f"b1_127.0.0.1:{b1.port}"}
    await serves(port, {"b1"})
    assert (await controller.apply([web(port, [b1, b2])], "t")).reload is ApplyOutcome.NONE
    await serves(port, {"b1", "b2"})
    assert controller.info.reloads == 0


async def outside_reload(controller) -> None:
    """A reload synapse did not make (on the master CLI), until a new worker runs."""
    before = await show_proc(controller)
    await MasterClient(str(controller.settings.master_socket)).reload()

    async def reloaded() -> bool:
        try:  # the master re-executes itself: its socket refuses meanwhile
            return (await show_proc(controller)).workers != before.workers
        except SocketUnavailable:
            return False

    await eventually(reloaded, "the outside reload to start a new worker")


async def back_in_service(runtime: RuntimeClient, server: str, what: str) -> None:
    """Until HAProxy has ``backend/server`` out of maintenance."""
    backend, name = server.split("/", 1)

    async def ready() -> bool:
        return not (await runtime.running_backends())[backend][name].in_maint

    await eventually(ready, what)


async def b2_in_maint(controller, b2) -> tuple[RuntimeClient, str]:
    """An operator puts web's server of backend ``b2`` into maintenance behind synapse's
    back: the runtime client it used and the server (``web/<name>``)."""
    runtime = RuntimeClient(controller.settings.runtime_sockets[0])
    name = f"web/b2_127.0.0.1:{b2.port}"
    await runtime.execute(f"set server {name} state maint")
    return runtime, name


async def test_drift_is_corrected_by_the_background_sweep(
    managed_factory, http_backend_factory, monkeypatch
):
    """An operator (or anything) puts a server into maintenance behind synapse's back, in
    a backend no change touches: the periodic sweep notices and puts it back."""
    monkeypatch.setattr(reader_module, "FULL_READ_INTERVAL", 0.5)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, other_port = free_port(), free_port()
    controller = managed_factory()
    other = service("api", [server("127.0.0.1", b2.port, b2.name)], port=other_port)
    await controller.apply([web(port, [b1, b2]), other], "t")
    await read_back(controller)  # (drift right after the start is corrected at once)
    runtime, name = await b2_in_maint(controller, b2)
    await serves(port, {"b1"})

    await back_in_service(runtime, name, "the sweep to put b2 back")
    await serves(port, {"b1", "b2"})
    assert controller.info.reloads == 0


async def test_a_command_failing_on_the_trusted_view_reads_all_and_plans_again(
    managed_factory, http_backend_factory
):
    """A change is planned on what synapse believes, without reading HAProxy first: when an
    operator deleted a server behind its back, the command for it fails; the apply then
    reads everything and plans again instead of reloading."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    await controller.apply([web(port, [b1, b2])], "t")
    await read_back(controller)
    runtime, gone = await b2_in_maint(controller, b2)
    assert "Server deleted" in await runtime.execute(f"del server {gone}")
    reads = controller._reader.view.full_reads
    result = await controller.apply([web(port, [b1])], "t")  # would put b2 into maint
    assert result.reload is ApplyOutcome.NONE, result
    assert controller._reader.view.full_reads == reads + 1 and controller.info.reloads == 0
    assert set((await runtime.running_backends())["web"]) == {f"b1_127.0.0.1:{b1.port}"}
    # The failed batch's backends count as touched (the state dump and a revive read them).
    assert "web" in controller._reader.touched_within(10)
    await serves(port, {"b1"})


async def test_an_apply_uses_one_connection_and_reads_only_what_changed(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    others = [service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], port=free_port())
              for i in range(3)]  # fmt: skip
    await controller.apply([web(port, [b1]), *others], "t")
    await read_back(controller)  # (the servers after the start: in the background)
    client = controller._runtime[0]
    connections, reads = client.connections, controller._reader.view.partial_reads
    result = await controller.apply([web(port, [b1, b2]), *others], "t")
    assert result.reload is ApplyOutcome.NONE and len(result.ops) == 2  # add server, state ready
    # No read before the commands (the view is trusted), on the connection the last apply
    # kept open; what they changed (web only) is read once the apply is over.
    assert client.connections == connections
    assert controller._reader.view.partial_reads == reads
    view = controller._reader.view

    async def read_after() -> bool:
        return view.partial_reads == reads + 1 and not view.stale

    await eventually(read_after, "the read after the apply")
    assert client.connections == connections
    assert f"b2_127.0.0.1:{b2.port}" in view.backends["web"]
    await serves(port, {"b1", "b2"})


async def test_a_kept_connection_to_an_old_worker_is_replaced(
    managed_factory, http_backend_factory
):
    """A reload synapse did not make (here: on the master CLI) leaves the kept connection
    with the old, stopping worker: the next apply reads from the new one."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    await controller.apply([web(port, [b1])], "t")
    client = controller._runtime[0]
    await outside_reload(controller)
    connections = client.connections
    result = await controller.apply([web(port, [b1, b2])], "t")
    assert result.reload is ApplyOutcome.NONE and result.ops
    # The commands went on the kept connection, to the old worker; the read after the
    # apply (`show info`) finds it stopping, reads the new one whole and applies again.
    worker = str((await show_proc(controller)).workers[0])
    runtime = RuntimeClient(controller.settings.runtime_sockets[0])

    async def in_new_worker() -> bool:
        state = await runtime.running_backends()
        return controller._reader.view.pid == worker and f"b2_127.0.0.1:{b2.port}" in state["web"]

    await eventually(in_new_worker, "the change to reach the new worker")
    assert client.connections == connections + 1  # the kept one reached the old worker
    await serves(port, {"b1", "b2"})
    assert controller.info.reloads == 0


async def test_drift_after_an_outside_reload_is_corrected_without_a_change(
    managed_factory, http_backend_factory, monkeypatch
):
    """After a reload synapse did not make, the sweep finds another process: with no
    registry change coming, it still reads the new one whole and corrects its drift."""
    monkeypatch.setattr(reader_module, "FULL_READ_INTERVAL", 0.5)
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    await controller.apply([web(port, [b1, b2])], "t")
    await outside_reload(controller)
    runtime, name = await b2_in_maint(controller, b2)

    await back_in_service(runtime, name, "the sweep to read the new worker")
    await serves(port, {"b1", "b2"})
    assert controller.info.reloads == 0


async def test_a_change_right_after_the_start_reads_its_backend_not_everything(
    managed_factory, http_backend_factory
):
    """After starting HAProxy synapse reads only its backends' names: a change right after
    reads what it plans, and the servers of every backend are read and planned in the
    background, a part at a time (no whole read of HAProxy's state on a change's path)."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    others = [
        service(f"s{i}", [server("127.0.0.1", b2.port, f"o{i}")], backend_only=True)
        for i in range(60)
    ]  # fmt: skip (more than two parts of a sweep)
    first = await controller.apply([web(port, [b1]), *others], "t")
    view = controller._reader.view
    assert first.reload is ApplyOutcome.DONE and view.full_reads == 0
    result = await controller.apply([web(port, [b1, b2]), *others], "t")
    assert result.reload is ApplyOutcome.NONE and len(result.ops) == 2  # add server, ready
    await serves(port, {"b1", "b2"})
    await read_back(controller)
    assert view.full_reads == 0 and controller.info.reloads == 0
    states = controller.status()["backends"]
    assert {s["state"] for s in states["web"].values()} == {"UP"} and len(states["web"]) == 2
    assert all(len(states[f"s{i}"]) == 1 for i in range(60))
