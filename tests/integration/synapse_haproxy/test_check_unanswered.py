"""A config check that gave no verdict (timed out), against a real HAProxy 2.6 (127.0.0.1
only): not a refusal of the candidate until the desired state changes, but a failed reload,
retried after the backoff."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import eventually, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port


def metric(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_a_check_that_timed_out_is_retried_not_refused(
    managed_factory, http_backend_factory, sockdir: Path
):
    b1 = http_backend_factory("b1")
    p_web, p_new = free_port(), free_port()
    slow = sockdir / "slow"
    check = f"if [ -e {slow} ]; then sleep 5; fi; haproxy -c -f {sockdir}/haproxy.cfg.candidate"
    registry = CollectorRegistry()
    controller = managed_factory(
        registry, restart_interval=0.0, check_command=check, do_checks=True, reload_timeout=1.0
    )
    await controller.start()
    assert (await controller.apply([web(p_web, [b1])], "start")).reload is ApplyOutcome.DONE

    slow.touch()  # the check is slow this once (a loaded machine, slow DNS)
    desired = [web(p_web, [b1]), service("new", [server("127.0.0.1", b1.port, "n")], port=p_new)]
    result = await controller.apply(desired, "new service")
    assert result.reload is ApplyOutcome.FAILED and "timed out" in (result.error or ""), result
    assert controller.status()["validation_error"] is None
    slow.unlink()

    # the same desired state again: retried after the backoff, and installed
    outcomes = []

    async def installed() -> bool:
        outcomes.append((await controller.apply(desired, "same state")).reload)
        return outcomes[-1] in (ApplyOutcome.DONE, ApplyOutcome.NONE)

    await eventually(installed, "the same desired state installed")
    assert ApplyOutcome.INVALID not in outcomes, outcomes
    await serves(p_new, {"b1"})
    assert metric(registry, "synapse_haproxy_validation_failures_total") == 0
    assert metric(registry, "synapse_haproxy_reload_failures_total") == 1
    assert controller.status()["validation_error"] is None
