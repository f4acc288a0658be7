"""Managed mode: a change of servers while a reload waits for a master that does not answer."""

from __future__ import annotations

import asyncio
import os
import signal

from haproxy_helpers import eventually, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port


async def test_a_change_goes_in_while_a_reload_waits_for_a_stopped_master(
    managed_factory, http_backend_factory
):
    """The master is stopped (SIGSTOP, a debugger, a frozen cgroup) when a reload is needed:
    the reload waits for its answer, the worker serves on. A change of servers meanwhile
    goes in at once (it waited for the reload's whole timeout before, 9-10 s), and is
    still served after the reload that follows once the master answers again."""
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port = free_port()
    controller = managed_factory(restart_interval=0)
    await controller.apply([web(port, [b1, b2])], "start")
    assert controller._managed is not None
    master = controller._managed.master_pid
    assert master is not None
    os.kill(master, signal.SIGSTOP)
    try:
        structural = [web(port, [b1, b2], backend=["retries 2"])]
        validated = controller._gate.next_at
        reloading = asyncio.create_task(controller.apply(structural, "a new backend line"))

        async def reloads() -> bool:  # (the candidate passed its check: HAProxy's turn next)
            return controller._gate.next_at != validated

        await eventually(reloads, "the reload to begin")
        b2.stop()
        change = await controller.apply([web(port, [b1, b3], backend=["retries 2"])], "change")
        assert not reloading.done(), "the change went in while the reload waited"
        assert change.ops, change
        await serves(port, {"b1", "b3"})
    finally:
        os.kill(master, signal.SIGCONT)
    assert (await reloading).reload in (ApplyOutcome.DONE, ApplyOutcome.FAILED)
    await controller.flush()  # (failed: retried once the master answers)
    assert controller.info.reloads >= 1
    await serves(port, {"b1", "b3"})  # the new worker
    admin = controller.settings.runtime_sockets[0]
    state = (await RuntimeClient(admin).running_backends())["web"]
    ready = {name for name, server in state.items() if server.label != "MAINT"}
    assert ready == {f"b1_127.0.0.1:{b1.port}", f"b3_127.0.0.1:{b3.port}"}, state
