"""Reads from outside the apply (zone_health's looks, /health/<service>) against a real
HAProxy 2.6, while applies run: they must not share the apply's held connection."""

from __future__ import annotations

import asyncio
import dataclasses

from haproxy_helpers import read_back, server, service
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome


async def test_looks_during_applies_neither_fail_nor_break_the_applys_connection(
    managed_factory,
):
    """Applies of server changes (runtime ops on the held connection) and looks at once: on
    a shared connection a look's read met the apply's (RuntimeError: read() called while
    another coroutine is already waiting) and closed the apply's connection."""
    controller = managed_factory(CollectorRegistry())
    base = [service(f"s{i}", [server("127.0.0.1", 21000 + i, f"o{i}")], backend_only=True)
            for i in range(4)]  # fmt: skip
    await controller.apply(base, "start")
    await read_back(controller)
    await controller.apply(base, "settled")
    applying = True
    looks, errors = 0, []

    async def look() -> None:
        nonlocal looks
        while applying:
            i, looks = looks % 4, looks + 1
            try:
                servers = await controller.backend_servers(f"s{i}")
                assert servers is not None and f"o{i}_127.0.0.1:{21000 + i}" in servers
            except Exception as exc:  # (counted: the test says which)
                errors.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0)

    lookers = [asyncio.create_task(look()) for _ in range(3)]
    connections = controller._runtime[0].connections
    try:
        # One server in, then out, of a backend: runtime ops. At least 150 applies, and on
        # until 150 looks ran among them (how many fit in 150 depends on the machine's load;
        # since looks share reads, 117-138 did on a loaded 2-core runner): at most 1,000.
        step = -1
        while (step := step + 1) < 150 or (looks <= 150 and step < 1000):
            services = list(base)
            if step % 2 == 0:
                old = services[step % 4]
                extra = server("127.0.0.1", 22000 + step, f"n{step}")
                services[step % 4] = dataclasses.replace(old, servers=[*old.servers, extra])
            result = await controller.apply(services, f"step {step}")
            assert result.reload is ApplyOutcome.NONE, result
            assert result.error is None and result.ops, result
    finally:
        applying = False
        await asyncio.gather(*lookers)
    assert looks > 150 and errors == [], errors[:3]
    # the applies kept their one connection: no look closed it under them
    assert controller._runtime[0].connections == connections
