"""A reload that outlasts ``reload_timeout`` because HAProxy gets no CPU (a cgroup quota,
a loaded host), against a real HAProxy 2.6 (127.0.0.1 only): its master is stopped
(SIGSTOP) right after it took the reload command, and let go later, or its new worker is.
The reload is waited for and confirmed, not declared failed with the old file put back and
HAProxy reloaded again (``synapse.haproxy.reload_wait``)."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from haproxy_helpers import eventually, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.controller import HAProxyController
from synapse.haproxy.sockets import HAProxySocketError
from testbed.process import free_port

STOPPED_S = 5.0  # the master gets no CPU this long: 2.5 reload_timeouts


@dataclass
class Rig:
    controller: HAProxyController
    registry: CollectorRegistry
    b1: Any
    b2: Any
    port: int
    port2: int
    stopped: list[int]  # processes SIGSTOPped (let go after the apply, at the latest)

    async def add_service(self) -> ApplyResult:
        """A new service (a reload); the stopped processes let go after it."""
        api = service("api", [server("127.0.0.1", self.b2.port, "b2")], port=self.port2)
        try:
            return await self.controller.apply([web(self.port, [self.b1]), api], "new service")
        finally:
            for pid in self.stopped:
                os.kill(pid, signal.SIGCONT)

    async def confirmed(self, result: ApplyResult) -> None:
        # before: "no new HAProxy worker within 2.0s", the old file back, a second reload
        assert result.reload is ApplyOutcome.DONE, result
        assert self.registry.get_sample_value("synapse_haproxy_reload_failures_total") == 0
        assert self.controller.info.reloads == 1
        assert self.controller.status()["last_reload_error"] is None
        text = Path(self.controller.settings.config_path).read_text()
        assert f"server b2_127.0.0.1:{self.b2.port}" in text  # the file says what runs
        await serves(self.port2, {"b2"})
        await serves(self.port, {"b1"})


@pytest.fixture
async def rig(managed_factory, http_backend_factory) -> Rig:
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, port2 = free_port(), free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0, reload_timeout=2.0)
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    return Rig(controller, registry, b1, b2, port, port2, [])


async def test_a_stopped_master_fails_at_reload_timeout_not_six_times_later(rig, caplog):
    """The master is stopped (SIGSTOP, a debugger) right after it took the reload: its
    socket takes connections and never answers, as a re-executing one's does not. It was
    waited for 6 x reload_timeout (each look held for the socket's 5 s timeout) and said
    to be "re-executing"; it gets no CPU, so the reload fails at reload_timeout."""
    managed = rig.controller._managed
    assert managed is not None and managed.master_pid is not None
    master, real_reload = managed.master_pid, managed.master.reload

    async def stopped_reload() -> str:
        managed.master.reload = real_reload  # type: ignore[method-assign]  # (once)
        answer = await real_reload()
        os.kill(master, signal.SIGSTOP)
        rig.stopped.append(master)
        return answer

    managed.master.reload = stopped_reload  # type: ignore[method-assign]
    began = asyncio.get_running_loop().time()
    result = await rig.add_service()  # (the master let go after it)
    took = asyncio.get_running_loop().time() - began
    assert result.reload is ApplyOutcome.FAILED, result
    assert "gets no CPU" in (result.error or ""), result.error
    assert took < 2.0 * 2.5, took  # reload_timeout 2 s (before: 12.0 s, 6 x 2 s)
    assert not [r for r in caplog.records if r.getMessage() == "haproxy_reload_slow"]
    await rig.controller.flush()  # the retry, the master running again
    await serves(rig.port2, {"b2"})


async def fail_a_reload(controller: HAProxyController) -> None:
    """An outside reload of a file HAProxy refuses: `show proc` says `1 [failed: 1]`."""
    managed = controller._managed
    assert managed is not None
    path = Path(controller.settings.config_path)
    good = path.read_text()
    path.write_text(good + "\nbogus-keyword\n")
    await managed.master.reload()

    async def counted() -> bool:
        try:
            return (await managed.master.show_proc()).failed_reloads == 1
        except HAProxySocketError:
            return False  # (it re-executes)

    await eventually(counted, "the failed reload")
    path.write_text(good)


@pytest.mark.parametrize("failed_before", [False, True], ids=["first", "after a failed one"])
async def test_a_reload_whose_new_worker_is_slow_is_confirmed_after_a_failed_reload_too(
    rig, failed_before
):
    """The new worker gets no CPU for a while (SIGSTOPped when synapse first sees it in
    `show proc`): the master answers `2 [failed: 0]` meanwhile. After a reload HAProxy had
    failed (`1 [failed: 1]` before this one) that answer was taken as not under way: the
    reload failed at reload_timeout, the old file back, HAProxy reloaded again."""
    managed = rig.controller._managed
    assert managed is not None
    if failed_before:
        await fail_a_reload(rig.controller)
    before = await managed.master.show_proc()
    real_show_proc = managed.master.show_proc

    async def new_worker_starved():  # type: ignore[no-untyped-def]
        proc = await real_show_proc()
        new = [pid for pid in proc.workers if pid not in before.workers]
        if new and not rig.stopped:
            os.kill(new[0], signal.SIGSTOP)
            rig.stopped.append(new[0])
            asyncio.get_running_loop().call_later(STOPPED_S, os.kill, new[0], signal.SIGCONT)
        return proc

    managed.master.show_proc = new_worker_starved  # type: ignore[method-assign]
    result = await rig.add_service()
    assert rig.stopped, "the new worker was never seen starting"
    await rig.confirmed(result)
    proc = await real_show_proc()
    assert proc.reloads == before.reloads + 1 and proc.failed_reloads == 0, proc
