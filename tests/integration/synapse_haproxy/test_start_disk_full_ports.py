"""A start on a full disk serves the config file on disk only when it answers every port as
the new config would (``synapse.haproxy.file_match``), against a real HAProxy 2.6
(127.0.0.1 only). A file whose ports the new config gives to other services, or whose
service it removed, would answer for the wrong service: nothing is served instead, until
the new config fits."""

from __future__ import annotations

import asyncio
import logging

import pytest
from haproxy_helpers import answered_by, server, serves, service
from test_start_disk_full import fill_disk

from synapse.contract import ApplyOutcome
from synapse.model import DesiredService
from testbed.process import free_port

NOT_SERVED = "haproxy_file_not_served"


def on(name: str, port: int, backend) -> DesiredService:  # type: ignore[no-untyped-def]
    return service(name, [server("127.0.0.1", backend.port, backend.name)], port=port)


async def wrong_answers(ports: dict[int, str], seconds: float) -> list[str]:
    """Requests to ``ports`` (port -> the one backend that may answer) for ``seconds``:
    every answer from another backend (a refused connection is fine)."""
    wrong: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        for port, name in ports.items():
            try:
                got = await answered_by(port, 3)
            except OSError:
                continue  # refused: better than the wrong service
            wrong += [f"{port}: {other}" for other in got - {name}]
        await asyncio.sleep(0.1)
    return wrong


@pytest.mark.parametrize("change", ["ports swapped", "a service removed"])
async def test_a_file_that_would_answer_for_another_service_is_not_served(
    managed_factory, http_backend_factory, monkeypatch, caplog, change
):
    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    pay, adm = http_backend_factory("payments-1"), http_backend_factory("admin-1")
    p1, p2 = free_port(), free_port()
    first = managed_factory(restart_interval=0.1)
    was = [on("payments", p1, pay), on("admin", p2, adm)]
    assert (await first.apply(was, "t")).reload is ApplyOutcome.DONE
    await serves(p1, {"payments-1"})
    await first.stop()  # (stop_on_exit: HAProxy stops too)

    fill_disk(monkeypatch)
    controller = managed_factory(restart_interval=0.1)
    await controller.start()
    if change == "ports swapped":
        now, wanted = [on("payments", p2, pay), on("admin", p1, adm)], {p1: "admin-1"}
    else:
        now, wanted = [on("payments", p1, pay)], {p1: "payments-1"}
    wanted[p2] = "payments-1" if change == "ports swapped" else "nobody"
    result = await controller.apply(now, "startup")
    assert result.reload is ApplyOutcome.FAILED and "No space left" in (result.error or "")
    # before: p1 answered by payments-1 and p2 by admin-1 for as long as the disk was full
    assert await wrong_answers(wanted, 3.0) == []
    assert controller.info.starts == 0
    [said] = [r.smartstack_fields for r in caplog.records if r.getMessage() == NOT_SERVED]
    assert "frontend admin" in said["differ"], said  # (once, not at every retry)

    monkeypatch.undo()  # space again: the new config
    await controller.flush()
    for port, name in wanted.items():
        if name != "nobody":
            await serves(port, {name})
    assert await wrong_answers(wanted, 1.0) == []


async def test_a_file_whose_ports_stay_is_served_while_a_new_service_waits(
    managed_factory, http_backend_factory, monkeypatch
):
    """The new config only adds a service: the file answers every port it binds as the
    new config would, so it serves (b39646a); the new service's port waits for space."""
    pay, adm = http_backend_factory("payments-1"), http_backend_factory("admin-1")
    p1, p2 = free_port(), free_port()
    first = managed_factory(restart_interval=0.1)
    assert (await first.apply([on("payments", p1, pay)], "t")).reload is ApplyOutcome.DONE
    await first.stop()

    fill_disk(monkeypatch)
    controller = managed_factory(restart_interval=0.1)
    await controller.start()
    result = await controller.apply([on("payments", p1, pay), on("admin", p2, adm)], "startup")
    assert result.reload is ApplyOutcome.FAILED
    await serves(p1, {"payments-1"})
    assert controller.info.starts == 1

    monkeypatch.undo()
    await controller.flush()
    await serves(p2, {"admin-1"})
