"""A round that replaces every server of a backend, against a real HAProxy 2.6 under load:
no request fails. Capacity comes before it goes (``planner.backend_ops``,
``runtime._waves``): the new servers are ready before the old ones go into maintenance
(or are deleted). With the old order (maint first, the new servers' `ready` one or two
batches later) HAProxy answered 503 meanwhile: here 2-4 (checked) and 10-23 (delete) of
~2,000 requests over the 30 swaps, in 3 runs of each; 0 since.

The same when the new servers can come only with a reload (``balance static-rr``): the old
ones stay until it (they answered 503 to all for ~1.9 s while it waited its turn).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from haproxy_helpers import read_back, serves, web
from haproxy_load import CLIENTS, all_answered, under_load
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port

SWAPS = 30
PAUSE_S = 0.05  # between swaps


@pytest.mark.parametrize(
    "overrides, options",
    [({}, "check inter 2s"), ({"remove_servers": "delete"}, "")],
    ids=["maint-checked", "delete"],
)
async def test_swapping_every_server_under_load_fails_no_request(
    managed_factory, http_backend_factory, overrides, options
):
    backends = [http_backend_factory(f"b{i}") for i in range(4)]
    blue, green = backends[:2], backends[2:]
    port = free_port()
    controller = managed_factory(CollectorRegistry(), **overrides)
    first = web(port, blue, server_options=options or None)
    await controller.apply([first], "start")
    await read_back(controller)
    await serves(port, {"b0", "b1"})

    def members(group):  # the same config object, as the reconciler hands it over
        return dataclasses.replace(first, servers=web(port, group).servers)

    with under_load(port) as counts:
        for swap in range(1, SWAPS + 1):
            result = await controller.apply([members(green if swap % 2 else blue)], "swap")
            assert result.reload is ApplyOutcome.NONE and result.ops, result
            await asyncio.sleep(PAUSE_S)  # (the clients keep going meanwhile)
    assert controller.info.reloads == 0
    all_answered(counts, SWAPS * CLIENTS, f" over {SWAPS} swaps")  # load ran across the swaps
    await serves(port, {"b0", "b1"})  # an even number of swaps: blue again


async def test_old_servers_stay_until_the_reload_that_brings_the_new_ones(
    managed_factory, http_backend_factory
):
    """``balance static-rr`` takes new servers only with a reload, and a reload just ran: the
    next one waits for ``restart_interval``. Every server is replaced meanwhile (in two
    changes, as a rolling deploy does): no request may fail while the reload waits."""
    b0, b1, b2, b3 = (http_backend_factory(f"b{i}") for i in range(4))
    port = free_port()
    controller = managed_factory(CollectorRegistry(), restart_interval=2.0)
    first = web(port, [b0, b1], backend=["balance static-rr"])
    await controller.apply([first], "start")
    await read_back(controller)
    await serves(port, {"b0", "b1"})

    def members(group):
        return dataclasses.replace(first, servers=web(port, group).servers)

    with under_load(port) as counts:
        await asyncio.sleep(0.2)
        result = await controller.apply([members([b0, b2])], "b1 -> b2")
        assert result.reload is ApplyOutcome.PENDING, result  # (it waits its turn)
        result = await controller.apply([members([b3, b2])], "b0 -> b3")
        await serves(port, {"b2", "b3"})  # the reload came
        await asyncio.sleep(0.2)
    all_answered(counts, CLIENTS, " while the reload waited")
