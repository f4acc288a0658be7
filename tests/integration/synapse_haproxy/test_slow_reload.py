"""A reload that outlasts ``reload_timeout`` because HAProxy gets no CPU (a cgroup quota,
a loaded host), against a real HAProxy 2.6 (127.0.0.1 only): its master is stopped
(SIGSTOP) right after it took the reload command, and let go later. The reload is waited
for and confirmed, not declared failed with the old file put back and HAProxy reloaded
again (``synapse.haproxy.reload_wait``)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from haproxy_helpers import server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port

STOPPED_S = 5.0  # the master gets no CPU this long: 2.5 reload_timeouts


async def test_a_reload_slower_than_reload_timeout_is_confirmed_not_failed(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, port2 = free_port(), free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0, reload_timeout=2.0)
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    managed = controller._managed
    assert managed is not None and managed.master_pid is not None
    master, real_reload = managed.master_pid, managed.master.reload
    loop = asyncio.get_running_loop()

    async def starved_reload() -> str:
        answer = await real_reload()  # (the master re-executes: it loads the new config)
        os.kill(master, signal.SIGSTOP)
        loop.call_later(STOPPED_S, os.kill, master, signal.SIGCONT)
        return answer

    managed.master.reload = starved_reload  # type: ignore[method-assign]
    api = service("api", [server("127.0.0.1", b2.port, "b2")], port=port2)  # (a reload)
    try:
        result = await controller.apply([web(port, [b1]), api], "a new service")
    finally:
        os.kill(master, signal.SIGCONT)
    # before: "no new HAProxy worker within 2.0s", the old file back, a second reload
    assert result.reload is ApplyOutcome.DONE, result
    assert registry.get_sample_value("synapse_haproxy_reload_failures_total") == 0
    assert controller.info.reloads == 1 and controller.status()["last_reload_error"] is None
    text = Path(controller.settings.config_path).read_text()
    assert f"server b2_127.0.0.1:{b2.port}" in text  # the file says what HAProxy runs
    await serves(port2, {"b2"})
    await serves(port, {"b1"})
