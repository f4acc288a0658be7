"""A HAProxy worker that is alive but stalled (a paused container, a VM stall, swapping)
while a change arrives: synapse's reads time out, and a reload would not help it. Its new
worker cannot take the listeners from the stalled one ("Failed to get the sockets from
the old process!"), binds its own, and when the old one resumes and soft-stops, the
connections queued on its listeners are reset (review s25: 32 of 60 in-flight requests).
The change waits for the worker instead, and goes in as soon as it answers again."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from haproxy_helpers import read_back, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port

STALL = 16.0  # > 3 timeouts of 5 s: every read of the apply, kept and fresh, times out


async def test_a_change_during_a_worker_stall_waits_for_it_rather_than_reloading(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller = managed_factory()
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    await read_back(controller)
    await serves(port, {"b1"})
    assert controller._managed is not None
    worker = controller._managed.worker_pid
    assert worker is not None
    runtime = RuntimeClient(controller.settings.runtime_sockets[0], timeout=2.0)

    os.kill(worker, signal.SIGSTOP)  # the worker only: its master still answers
    stopped = time.monotonic()
    thaw = asyncio.get_running_loop().call_later(STALL, os.kill, worker, signal.SIGCONT)
    try:
        await asyncio.sleep(1.0)
        result = await asyncio.wait_for(controller.apply([web(port, [b1, b2])], "add b2"), 40)
        assert controller.info.reloads == 0, "reloaded during the stall (runtime_unavailable)"
        assert result.reload is not ApplyOutcome.DONE and result.error, result
        if time.monotonic() < stopped + STALL - 1.0:
            slow = [p for p in controller.health() if "slow" in p]
            assert slow, controller.health()
            assert controller.status()["runtime_slow_s"] is not None
        while time.monotonic() < stopped + STALL:
            await asyncio.sleep(0.1)
    finally:
        thaw.cancel()
        os.kill(worker, signal.SIGCONT)
    thawed = time.monotonic()

    async def added() -> bool:  # in HAProxy itself, and the same worker
        found = (await runtime.running_backends())["web"].get(f"b2_127.0.0.1:{b2.port}")
        return found is not None and not found.in_maint

    while not await added():
        assert time.monotonic() - thawed < 4.0, "the change did not follow the stall's end"
        await asyncio.sleep(0.1)
    took = time.monotonic() - thawed
    print("TOOK", round(took, 2), flush=True)
    await serves(port, {"b1", "b2"})
    assert controller.info.reloads == 0 and controller._managed.worker_pid == worker
    assert took < 3.0, took
    assert not [p for p in controller.health() if "admin socket" in p], controller.health()
