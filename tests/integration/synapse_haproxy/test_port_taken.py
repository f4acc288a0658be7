"""A service's frontend port held by another process (a plain listener), real HAProxy 2.6.

Before, the check that keeps HAProxy from sharing such a port (SO_REUSEPORT) refused the
whole config: the first start never happened (every service refused connections) and,
once such a service was added, every later reload failed. Now that service is left out
(isolated, its frontend port named with its holder) and the others are served; once the
port is free it is tried again and served.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

import pytest
from haproxy_helpers import eventually, server, serves, service, web
from prometheus_client import CollectorRegistry

from synapse.contract import ApplyOutcome
from testbed.process import free_port

TAKEN = "not in HAProxy (its frontend port is taken by another process)"


@pytest.fixture
def holder() -> Iterator[socket.socket]:
    """A plain listener (no SO_REUSEPORT), as another daemon's would be."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock
    finally:
        sock.close()


def _api(port: int, backend) -> object:
    return service("api", [server("127.0.0.1", backend.port, backend.name)], port=port)


def _isolated(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [
        r.smartstack_fields for r in caplog.records if r.getMessage() == "haproxy_service_isolated"
    ]


async def _freed_and_served(controller, holder: socket.socket, port: int, name: str) -> None:
    """The holder lets the port go: the service is tried again and served (the recheck)."""
    holder.close()
    await serves(port, {name})

    async def ended() -> bool:
        return not controller.status()["isolated_services"]

    await eventually(ended, "the isolation to end")


async def test_a_start_serves_the_others_when_one_frontend_port_is_taken(
    managed_factory, http_backend_factory, holder, caplog
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, taken = free_port(), holder.getsockname()[1]
    controller = managed_factory(CollectorRegistry())
    with caplog.at_level(logging.INFO):
        result = await controller.apply([web(port, [b1]), _api(taken, b2)], "start")
    # Before: FAILED, HAProxy never started (web refused connections, retried with backoff).
    assert result.reload is ApplyOutcome.DONE, result
    await serves(port, {"b1"})
    isolated = controller.status()["isolated_services"]["api"]
    assert isolated["running"] == TAKEN
    assert (
        f"port {taken} (localhost:{taken}) is already bound by pid {os.getpid()}"
        in (isolated["error"])
    )
    [logged] = _isolated(caplog)
    assert logged["service"] == "api" and f"port {taken}" in logged["error"]
    assert logged["detail"] == "left out (its frontend port is taken)"
    assert controller.status()["last_reload_error"] is None
    await _freed_and_served(controller, holder, taken, "b2")
    await serves(port, {"b1"})


async def test_a_service_added_on_a_taken_port_does_not_block_later_reloads(
    managed_factory, http_backend_factory, holder
):
    b1, b2, b3 = (http_backend_factory(f"b{i}") for i in (1, 2, 3))
    port, other, taken = free_port(), free_port(), holder.getsockname()[1]
    controller = managed_factory(CollectorRegistry(), restart_interval=0)
    await controller.apply([web(port, [b1])], "start")
    await serves(port, {"b1"})
    added = await controller.apply([web(port, [b1]), _api(taken, b2)], "api on a taken port")
    assert added.reload is ApplyOutcome.INVALID and added.isolated == ("api",)
    third = service("third", [server("127.0.0.1", b3.port, "b3")], port=other)
    # Before: every reload from here on failed (the whole config held the taken port).
    later = await controller.apply([web(port, [b1]), _api(taken, b2), third], "third")
    assert later.reload is ApplyOutcome.DONE, later
    await serves(other, {"b3"})
    await serves(port, {"b1"})
    assert controller.status()["last_reload_error"] is None
    await _freed_and_served(controller, holder, taken, "b2")
    await serves(other, {"b3"})


async def test_a_service_moved_to_a_taken_port_keeps_serving_on_its_old_one(
    managed_factory, http_backend_factory, holder
):
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port, old, taken = free_port(), free_port(), holder.getsockname()[1]
    controller = managed_factory(CollectorRegistry(), restart_interval=0)
    await controller.apply([web(port, [b1]), _api(old, b2)], "start")
    await serves(old, {"b2"})
    await controller.apply([web(port, [b1]), _api(taken, b2)], "api moved")
    assert controller.status()["isolated_services"]["api"]["running"] == "last good config"
    await serves(old, {"b2"})  # its last good block: the old port
    holder.close()
    await serves(taken, {"b2"})  # the port is free: the move goes in (within the recheck)

    async def moved() -> bool:  # (HAProxy's listeners, as synapse holds them)
        return ("127.0.0.1", old) not in controller._managed.listeners.addresses

    await eventually(moved, f"port {old} to be let go")
