"""The express path against a real HAProxy 2.6: a change of servers only goes out before
its render, the config file still follows, and anything structural takes the usual way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from haproxy_helpers import read_back, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port


async def test_a_change_of_servers_goes_first_and_a_structural_one_the_usual_way(
    managed_factory, http_backend_factory
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port, api_port = free_port(), free_port()
    controller = managed_factory(CollectorRegistry(), restart_interval=0.2)
    first = web(port, [b1])
    await controller.apply([first], "start")
    await read_back(controller)
    express = controller._express
    quiet = await controller.apply([first], "nothing new")  # ends clean: ready
    assert not quiet.ops and express.sent == 0

    def members(*backends):  # the same config object, as the reconciler hands it over
        return dataclasses.replace(first, servers=web(port, backends).servers)

    for backends, expected in (([b1, b2], {"b1", "b2"}), ([b2], {"b2"}), ([b1, b2], None)):
        result = await controller.apply([members(*backends)], "servers")
        assert result.reload is ApplyOutcome.NONE and result.ops, result
        assert result.acked_at is not None  # (HAProxy answered: the reconciler's trace)
        await serves(port, expected or {"b1", "b2"})
    assert express.sent == 3 and controller.info.reloads == 0
    await controller.flush()  # the file follows what HAProxy runs (rendered after)
    text = Path(controller.settings.config_path).read_text()
    assert f"127.0.0.1:{b1.port} " in text and f"127.0.0.1:{b2.port} " in text

    # Servers and a new service in one change: nothing goes first, the reload has both.
    api = service("api", [server("127.0.0.1", b3.port, "b3")], port=api_port)
    mixed = await controller.apply([members(b1, b2, b3), api], "mixed")
    assert mixed.reload in (ApplyOutcome.DONE, ApplyOutcome.PENDING), mixed
    await controller.flush()
    assert express.sent == 3 and controller.info.reloads == 1
    await serves(port, {"b1", "b2", "b3"})
    await serves(api_port, {"b3"})
