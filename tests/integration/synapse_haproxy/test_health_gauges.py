"""The state gauges of /metrics (``HAProxyMetrics._states``), read at scrape time, against a
real HAProxy 2.6: they hold while a problem lasts. Before, the only metric of a refused config
was synapse_haproxy_validation_failures_total, which goes flat while the config stays refused:
the shipped alert on its increase cleared after its window with /health still 503."""

from __future__ import annotations

from haproxy_helpers import serves, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port


def _gauges(registry: CollectorRegistry) -> tuple[float | None, float | None]:
    return (
        registry.get_sample_value("synapse_haproxy_healthy"),
        registry.get_sample_value("synapse_haproxy_config_invalid"),
    )


async def test_the_health_gauges_hold_while_a_config_is_refused(
    managed_factory, http_backend_factory
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    registry = CollectorRegistry()
    controller = managed_factory(registry, restart_interval=0)  # (validation inline)
    await controller.apply([web(port, [b1])], "start")
    assert _gauges(registry) == (1.0, 0.0)

    bad = await controller.apply([web(port, [b1], backend=["no-such-keyword 1"])], "bad")
    assert bad.reload is ApplyOutcome.INVALID
    assert _gauges(registry) == (0.0, 1.0)
    # Later changes go on at runtime, no new validation failure: the gauges still say so
    # (the counter stays where it was).
    later = await controller.apply([web(port, [b1, b2], backend=["no-such-keyword 1"])], "t")
    assert later.reload is ApplyOutcome.INVALID and later.ops
    await serves(port, {"b1", "b2"})
    assert registry.get_sample_value("synapse_haproxy_validation_failures_total") == 1
    assert _gauges(registry) == (0.0, 1.0)

    fixed = await controller.apply([web(port, [b1, b2])], "fixed")
    assert fixed.error is None
    assert _gauges(registry) == (1.0, 0.0)
