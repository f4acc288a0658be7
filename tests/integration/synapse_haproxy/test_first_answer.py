"""A reload that kept failing through a long outage runs at HAProxy's first answer, against
a real HAProxy 2.6 (127.0.0.1 only): the managed master is stopped (SIGSTOP: its socket
takes connections and never answers, its worker serves on) while a new service needs a
reload, then let go. The retry waited out its grown backoff (16 s here, up to 60 s) after
the master answered again (``synapse.haproxy.first_answer``, ``ReloadGate.heard``). A late
answer on the operator's busy admin socket is not such a first answer (Airbnb mode)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from haproxy_helpers import server, serves, service, web
from prometheus_client import CollectorRegistry
from test_controller_airbnb import running
from test_controller_airbnb import web as airbnb_web

from synapse.contract import ApplyOutcome
from synapse.haproxy.controller import HAProxyController
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


HOLD_S = 2.5  # monitoring clients hold the capped admin socket this long after the failure


async def test_a_late_answer_on_a_busy_admin_socket_leaves_a_hung_reloads_backoff_alone(
    haproxy_factory, http_backend_factory, sockdir
):
    """Airbnb mode, a reload_command that hangs while HAProxy answers, the operator's admin
    socket capped (`stats maxconn`) and held by monitoring clients: the look's `show info`
    waits for a slot longer than a look's period, then is answered when they let go. A busy
    HAProxy, not one coming back: the retry waits out its backoff (8 s here). Before, that
    late answer read as HAProxy's return and brought the retry forward to the release,
    after every failure (b593750's backoff undone)."""
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, port2 = free_port(), free_port()
    admin, runs = sockdir / "admin.sock", sockdir / "runs"
    capped = ["maxconn 256", "stats maxconn 2", "hard-stop-after 5s",
              f"stats socket {admin} mode 600 level admin expose-fd listeners"]  # fmt: skip
    config, _ = running(haproxy_factory, sockdir, [airbnb_web(port, [b1])],
                        reload_command=f"sh -c 'echo run >> {runs}; sleep 30'",
                        reload_timeout=1.0, **{"global": capped})  # fmt: skip
    controller = HAProxyController(config, CollectorRegistry())
    await controller.start()
    clients: list[asyncio.StreamWriter] = []
    try:
        await controller.apply([airbnb_web(port, [b1])], "synapse restarted")
        # (failures so far: the next one backs off 16 s, well past this test's ~5.5 s)
        controller._gate.failures = 4
        api = service("api", [server("127.0.0.1", b2.port, "b2")], port=port2)
        result = await controller.apply([airbnb_web(port, [b1]), api], "new service")
        assert result.reload is ApplyOutcome.FAILED, result
        assert controller.status()["last_reload_error"]["retry_in_s"] == 16.0
        clients += await every_slot_taken(admin)
        await asyncio.sleep(HOLD_S)  # the looks' question waits for a slot
        for writer in clients:
            writer.close()
        await asyncio.sleep(2.0)  # the waiting question is answered at once
        attempts = (await asyncio.to_thread(runs.read_text)).split()
        assert len(attempts) == 1, attempts  # before: a second attempt at the release
        assert controller._gate.due_in() > 1.0
    finally:
        for writer in clients:
            writer.close()
        await controller.stop()


async def every_slot_taken(admin: Path) -> list[asyncio.StreamWriter]:
    """Monitoring clients on ``admin``, connected until one waits for a slot (it stays
    queued too): HAProxy's CLI counts some connections of its own against the cap."""
    clients: list[asyncio.StreamWriter] = []
    while len(clients) < 10:
        reader, writer = await asyncio.open_unix_connection(str(admin))
        clients.append(writer)
        writer.write(b"prompt\n")
        try:
            await asyncio.wait_for(reader.readuntil(b"\n> "), 0.5)
        except TimeoutError:
            return clients
    raise AssertionError(f"{admin}: `stats maxconn` did not cap it")
