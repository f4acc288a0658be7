"""A reload that kept failing through a long outage runs at HAProxy's first answer, against
a real HAProxy 2.6 (127.0.0.1 only): the managed master is stopped (SIGSTOP: its socket
takes connections and never answers, its worker serves on) while a new service needs a
reload, then let go. The retry waited out its grown backoff (16 s here, up to 60 s) after
the master answered again (``synapse.haproxy.first_answer``, ``ReloadGate.heard``)."""

from __future__ import annotations

import asyncio
import os
import signal

from haproxy_helpers import server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port

SILENT_S = 2.5  # the master stays stopped this long after the failure: looks find it silent


async def test_a_reload_failed_through_a_long_outage_runs_at_the_masters_first_answer(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, port2 = free_port(), free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0, reload_timeout=2.0)
    assert (await controller.apply([web(port, [b1])], "t")).reload is ApplyOutcome.DONE
    managed = controller._managed
    assert managed is not None and managed.master_pid is not None
    master = managed.master_pid
    controller._gate.failures = 4  # a long outage so far: the next failure backs off 16 s
    api = service("api", [server("127.0.0.1", b2.port, "b2")], port=port2)
    loop = asyncio.get_running_loop()
    os.kill(master, signal.SIGSTOP)
    try:
        result = await controller.apply([web(port, [b1]), api], "new service")
        assert result.reload is ApplyOutcome.FAILED, result
        error = controller.status()["last_reload_error"]
        assert "no answer to 'show proc'" in error["message"] and error["retry_in_s"] == 16.0
        await asyncio.sleep(SILENT_S)
    finally:
        os.kill(master, signal.SIGCONT)
    left, began = controller._gate.due_in(), loop.time()
    await serves(port2, {"b2"})
    took = loop.time() - began
    # before: the rest of its backoff (~13 s); now a look's period or two and the reload
    assert took < left / 3, (took, left)
    await controller.flush()  # (the worker serves before synapse has confirmed it)
    assert controller.info.reloads == 1
    assert controller.status()["last_reload_error"] is None
    await serves(port, {"b1"})
