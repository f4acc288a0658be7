"""A HAProxy worker that is alive but stalled (a paused container, a VM stall, swapping)
while a change arrives: synapse's reads time out, and a reload would not help it. Its new
worker cannot take the listeners from the stalled one ("Failed to get the sockets from
the old process!"), binds its own, and when the old one resumes and soft-stops, the
connections queued on its listeners are reset (review s25: 32 of 60 in-flight requests).
The change waits for the worker instead, and goes in as soon as it answers again."""

from __future__ import annotations

import asyncio
import collections
import http.client
import os
import signal
import threading
import time
from typing import Any

import pytest
from haproxy_helpers import read_back, server, serves, service, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.runtime import RuntimeClient
from testbed.process import free_port

STALL = 16.0  # > 3 timeouts of 5 s: every read of the apply, kept and fresh, times out


async def serving(
    controller: HAProxyController, port: int, b1: Any
) -> tuple[HAProxyController, int]:
    """``controller`` (managed) serving "web" on ``port`` with ``b1``, read back; its
    worker's pid."""
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    await read_back(controller)
    await serves(port, {"b1"})
    assert controller._managed is not None
    worker = controller._managed.worker_pid
    assert worker is not None
    return controller, worker


@pytest.mark.long
async def test_a_change_during_a_worker_stall_waits_for_it_rather_than_reloading(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    controller, worker = await serving(managed_factory(), port, b1)
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


class Clients:
    """HTTP requests in a loop through HAProxy (one connection each, waiting up to 60 s:
    a request queued during the stall is in flight, not failed), their outcomes counted."""

    def __init__(self, port: int, threads: int) -> None:
        self.port, self.outcomes = port, collections.Counter[str]()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        for _ in range(50_000):  # (bounded; stopped long before)
            if self._stop.is_set():
                return
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("GET", "/", headers={"Connection": "close"})
                answer = conn.getresponse()
                answer.read()
                self.outcomes[str(answer.status)] += 1
            except (OSError, http.client.HTTPException) as err:
                self.outcomes[type(err).__name__] += 1
            finally:
                conn.close()
            time.sleep(0.01)

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(70)


STRUCTURAL_STALL = 12.0  # > 2 timeouts of 5 s: one wait of the apply times out, with margin


@pytest.mark.parametrize(
    "stalls", ["before the apply", pytest.param("after the apply's read", marks=pytest.mark.long)]
)
async def test_a_new_service_during_an_unnoticed_stall_reloads_once_the_worker_answers(
    managed_factory, http_backend_factory, stalls
):
    """A structural change (a new service: only a reload adds it) while the worker is
    stalled: before the apply (planned on the trusted view, no read: HAProxy is asked
    `show info` before the reload), or right after the apply's read answered (its later
    wait, the edge's `show map`, meets the timeout: that is the stall, review s26 cr:
    13-15 of ~5,200 requests reset by a reload into it). Either way the reload waits for
    the worker, then goes in once, and no request fails."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, api_port = free_port(), free_port()
    controller, worker = await serving(managed_factory(), port, b1)
    api = service("api", [server("127.0.0.1", b2.port, b2.name)], port=api_port)
    loop, stall = asyncio.get_running_loop(), {}

    def stop_worker() -> None:
        os.kill(worker, signal.SIGSTOP)  # the worker only: its master still answers
        stall["at"] = time.monotonic()
        stall["thaw"] = loop.call_later(STRUCTURAL_STALL, os.kill, worker, signal.SIGCONT)

    if stalls == "after the apply's read":
        reader, read = controller._reader, controller._reader.read

        async def read_then_stall(*args: Any, **kwargs: Any) -> Any:
            running = await read(*args, **kwargs)
            if "at" not in stall:
                stop_worker()
            return running

        reader.read = read_then_stall  # type: ignore[method-assign]
        reader.invalidate()  # (the apply reads: HAProxy answers in this apply)
    else:
        assert controller._reader.trusted

    with Clients(port, 4) as clients:
        await asyncio.sleep(0.5)
        try:
            if stalls == "before the apply":
                stop_worker()
                await asyncio.sleep(1.0)
            result = await asyncio.wait_for(controller.apply([web(port, [b1]), api], "add"), 40)
            into = time.monotonic() - stall["at"]
            assert controller.info.reloads == 0, (
                f"reloaded; the apply ended {into:.1f} s into the stall"
            )
            assert result.reload is ApplyOutcome.FAILED and "slow" in (result.error or ""), result
            while time.monotonic() < stall["at"] + STRUCTURAL_STALL:
                assert controller.info.reloads == 0, "reloaded during the stall"
                await asyncio.sleep(0.1)
        finally:
            if "thaw" in stall:
                stall["thaw"].cancel()
            os.kill(worker, signal.SIGCONT)
        thawed = time.monotonic()
        await serves(api_port, {"b2"})  # (the sweep's apply, once the worker answers)
        while not controller.info.reloads and time.monotonic() - thawed < 30:
            await asyncio.sleep(0.1)  # (counted once the new worker is confirmed)
        print("RELOADED", round(time.monotonic() - thawed, 2), controller.info.last_reload)
        assert controller.info.reloads == 1, controller.info.last_reload
        await asyncio.sleep(1.0)  # requests across the reload's end
    print("OUTCOMES", dict(clients.outcomes), flush=True)
    assert set(clients.outcomes) == {"200"}, dict(clients.outcomes)
    assert not [p for p in controller.health() if "admin socket" in p], controller.health()
