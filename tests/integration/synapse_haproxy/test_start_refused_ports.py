"""A start whose new config HAProxy refuses outright (a bad `global` line: no service to
isolate) runs the config file on disk, the last good one, only when it answers every port
as the new config would (``synapse.haproxy.file_match``): a previous run's file whose
ports the new config gives to other services would answer for the wrong service. Real
HAProxy 2.6 on 127.0.0.1."""

from __future__ import annotations

from haproxy_helpers import serves
from test_start_disk_full_ports import on, wrong_answers

from synapse.contract import ApplyOutcome
from testbed.process import free_port

BAD_GLOBAL = ["maxconn 256", "hard-stop-after 5s", "no-such-keyword 1"]


async def previous_run(managed_factory, services) -> None:  # type: ignore[no-untyped-def]
    """A synapse ran ``services`` and stopped (HAProxy with it: a reboot)."""
    first = managed_factory(restart_interval=0.1)
    assert (await first.apply(services, "t")).reload is ApplyOutcome.DONE
    await first.stop()


async def test_a_refused_start_does_not_serve_a_file_that_answers_for_another_service(
    managed_factory, http_backend_factory
):
    pay, adm = http_backend_factory("payments-1"), http_backend_factory("admin-1")
    p1, p2 = free_port(), free_port()
    await previous_run(managed_factory, [on("payments", p1, pay), on("admin", p2, adm)])

    controller = managed_factory(restart_interval=0.1, **{"global": BAD_GLOBAL})
    await controller.start()
    swapped = [on("payments", p2, pay), on("admin", p1, adm)]
    result = await controller.apply(swapped, "startup")
    assert result.reload is ApplyOutcome.INVALID, result
    # before: the old file ran, p1 answered by payments-1 and p2 by admin-1
    assert await wrong_answers({p1: "admin-1", p2: "payments-1"}, 2.0) == []
    assert controller.info.starts == 0


async def test_a_refused_start_serves_the_file_when_its_ports_stay(
    managed_factory, http_backend_factory
):
    pay = http_backend_factory("payments-1")
    p1 = free_port()
    await previous_run(managed_factory, [on("payments", p1, pay)])

    controller = managed_factory(restart_interval=0.1, **{"global": BAD_GLOBAL})
    await controller.start()
    result = await controller.apply([on("payments", p1, pay)], "startup")
    assert result.reload is ApplyOutcome.INVALID, result
    await serves(p1, {"payments-1"})  # the last good config, while the new one is refused
    assert controller.info.starts == 1
