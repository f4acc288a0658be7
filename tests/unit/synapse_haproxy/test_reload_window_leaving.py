"""Beside a reload when no bridge reaches the latest desired state (``reload_window.leaving``):
the servers that left go into maintenance, never the last one serving."""

from __future__ import annotations

from haproxy_helpers import server, service

from synapse.haproxy.reload_window import leaving
from synapse.haproxy.running import OP_STOPPED, RunningServer


def running(*servers: tuple[int, int]) -> dict[str, dict[str, RunningServer]]:
    """Backend ``web`` with a server on 10.0.0.1:<port> per (port, op_state)."""
    found = [(server("10.0.0.1", port).name, port, op) for port, op in servers]
    made = (RunningServer("web", n, p, "10.0.0.1", p, op_state=op) for n, p, op in found)
    return {"web": {s.name: s for s in made}}


def test_a_server_that_left_goes_into_maintenance_beside_one_only_a_reload_adds() -> None:
    desired = [service("web", [server("10.0.0.1", 1), server("10.0.0.1", 3)])]
    ops = leaving(desired, running((1, 2), (2, 2)))
    gone = server("10.0.0.1", 2).name
    assert [op.command for op in ops] == [f"set server web/{gone} state maint"]


def test_the_last_server_serving_is_never_taken_away() -> None:
    only_new = [service("web", [server("10.0.0.1", 3)])]  # (none kept: all only a reload adds)
    assert leaving(only_new, running((1, 2), (2, 2))) == []
    down = [service("web", [server("10.0.0.1", 1)])]  # (the one kept is DOWN)
    assert leaving(down, running((1, OP_STOPPED), (2, 2))) == []


def test_servers_already_in_maintenance_and_unknown_backends_send_nothing() -> None:
    desired = [service("web", [server("10.0.0.1", 1)]), service("api", [server("10.0.0.1", 9)])]
    state = running((1, 2), (2, 2))
    state["web"][server("10.0.0.1", 2).name] = RunningServer(
        "web", server("10.0.0.1", 2).name, 2, "10.0.0.1", 2, admin_state=1
    )
    assert leaving(desired, state) == []
