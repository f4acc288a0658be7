"""A registration whose host is a DNS name that does not resolve, against a real HAProxy 2.6
(127.0.0.1 only): HAProxy's default init-addr fails the whole parse on such a name, which
would refuse every reload on the host; with synapse's `init-addr last,libc,none` the server
starts in maintenance and everything else is applied."""

from __future__ import annotations

from pathlib import Path

from haproxy_helpers import eventually, haproxy_check, server, serves, service, web

from synapse.contract import ApplyOutcome
from testbed.process import free_port


async def test_an_unresolvable_host_does_not_block_reloads(
    managed_factory, http_backend_factory, sockdir: Path
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    ports = {name: free_port() for name in ("web", "api", "new")}
    controller = managed_factory(restart_interval=0.0)  # (no wait between reloads)
    await controller.start()
    assert (await controller.apply([web(ports["web"], [b1])], "start")).reload is ApplyOutcome.DONE

    # a new service with a good server and one whose host left DNS
    gone = server("gone.invalid", 80, "g")
    api = service("api", [server("127.0.0.1", b2.port, "b2"), gone], port=ports["api"])
    result = await controller.apply([web(ports["web"], [b1]), api], "api")
    assert result.reload is ApplyOutcome.DONE, result
    await serves(ports["api"], {"b2"})
    # ... another new service in the same synapse is not refused either
    new = service("new", [server("127.0.0.1", b3.port, "b3")], port=ports["new"])
    result = await controller.apply([web(ports["web"], [b1]), api, new], "new")
    assert result.reload is ApplyOutcome.DONE, result
    await serves(ports["new"], {"b3"})
    await serves(ports["web"], {"b1"})
    assert controller.status()["isolated_services"] == {}

    async def in_maintenance() -> bool:  # (not resolved: HAProxy holds it out of balancing)
        await controller.apply([web(ports["web"], [b1]), api, new], "again")
        states = controller.status()["backends"].get("api", {})
        return states.get(gone.name, {}).get("state") == "MAINT"

    await eventually(in_maintenance, "the unresolved server read in maintenance")
    # nothing left to do: no reload, no command (the server stays as HAProxy holds it)
    again = await controller.apply([web(ports["web"], [b1]), api, new], "again")
    assert again.reload is ApplyOutcome.NONE and again.ops == (), again
    # a restart from the file (a crash) parses it as well
    haproxy_check((sockdir / "haproxy.cfg").read_text(), sockdir)
