"""A new server whose host is a DNS name, against a real HAProxy 2.6 (127.0.0.1 only).

HAProxy 2.6's `add server B/S name:port` registers the name unresolved (no address, never
served) and `set server addr` refuses names, so such a server used to wait for a reload:
up to `restart_interval` late in a stream of changes (review s37, 10 services churning with
`localhost` hosts: 8 reloads in 12 s, a new server served 1.9-2.0 s after its registration,
against 0 and 0.05-0.08 s by IP). Synapse has its own answer for the name
(``dns_addresses``): the server is added at that address, no reload."""

from __future__ import annotations

from haproxy_helpers import eventually, read_back, server, serves, service

from synapse.contract import ApplyOutcome
from testbed.process import free_port


def named(backends) -> list:
    return [server("localhost", b.port, b.name) for b in backends]


async def test_a_dns_named_server_is_added_at_runtime(managed_factory, http_backend_factory):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, other = free_port(), free_port()
    controller = managed_factory(restart_interval=3.0)  # (a reload now would be held)
    await controller.start()
    first = await controller.apply([service("web", named([b1]), port=port)], "start")
    assert first.reload is ApplyOutcome.DONE, first
    await read_back(controller)
    await serves(port, {"b1"})

    web = service("web", named([b1, b2]), port=port)
    result = await controller.apply([web], "b2")
    # before: reload PENDING (held for restart_interval), b2 not served meanwhile
    assert result.reload is ApplyOutcome.NONE, result
    adds = [op.split()[3] for op in result.ops if op.startswith("add server ")]
    assert adds == [f"127.0.0.1:{b2.port}"], result.ops  # (synapse's answer for the name)
    await serves(port, {"b1", "b2"})

    # a reload later (a new service) keeps it at that address, and nothing is owed after
    api = service("api", named([b1]), port=other)

    held = await controller.apply([web, api], "api")
    assert held.reload is ApplyOutcome.PENDING, held  # (it runs once restart_interval allows)
    await serves(other, {"b1"})
    await read_back(controller)
    await serves(port, {"b1", "b2"})

    async def reload_ended() -> bool:  # (the new worker serves a moment before it ends)
        return (await controller.apply([web, api], "ended")).reload is ApplyOutcome.NONE

    await eventually(reload_ended, "the reload adding api to end")
    again = await controller.apply([web, api], "again")
    assert again.reload is ApplyOutcome.NONE and again.ops == (), again
