"""The view after runtime commands (``view_ops``): what `show servers state` reports after
them (as measured on HAProxy 2.6; the integration test ``test_view_follows`` compares with
a real one), None where only a read can tell, and the reader reading those backends back."""

from __future__ import annotations

import asyncio
import dataclasses

from haproxy_helpers import haproxy_config, render, running_from, server, service

from synapse.haproxy import view_ops
from synapse.haproxy.ops import AddServer, DelServer, EnableHealth, SetAddr, SetState, SetWeight
from synapse.haproxy.outside import SweepHooks
from synapse.haproxy.planner import backend_ops
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.running import CHECK_CONFIGURED, Capabilities, RunningServer
from synapse.haproxy.view_ops import after_ops

from test_view import ScriptedClient, srv  # isort: skip

X = RunningServer("b", "x", 3, "10.0.0.1", 80)


def test_each_command_as_haproxy_reports_it():
    add = AddServer("b", "n", "10.0.0.2:8080", "check id 7 weight 5 pool-max-conn -1")
    new = after_ops("b", {"x": X}, [add])
    assert new is not None and new["x"] is X
    # maint, stopped, checks configured but disabled
    assert new["n"] == RunningServer("b", "n", 7, "10.0.0.2", 8080, 0, 1, 5, 5, CHECK_CONFIGURED)
    ready = after_ops("b", new, [EnableHealth("b", "n"), SetState("b", "n", "ready")])
    assert ready is not None and ready["n"].admin_state == 0 and ready["n"].op_state == 2
    assert not ready["n"].check_disabled
    gone = after_ops("b", ready, [SetState("b", "x", "maint"), DelServer("b", "x")])
    assert gone is not None and set(gone) == {"n"}
    maint = after_ops("b", {"x": X}, [SetState("b", "x", "maint")])
    assert maint is not None and maint["x"].forced_maint and maint["x"].op_state == 0
    moved = after_ops("b", {"x": X}, [SetWeight("b", "x", 9), SetAddr("b", "x", "10.0.0.5", 81)])
    assert moved is not None
    assert (moved["x"].weight, moved["x"].initial_weight) == (9, 1)
    assert (moved["x"].addr, moved["x"].port) == ("10.0.0.5", 81)
    # `state ready` keeps what it does not lift (inherited maintenance: still stopped).
    inherited = RunningServer("b", "x", 3, "10.0.0.1", 80, op_state=0, admin_state=0x03)
    lifted = after_ops("b", {"x": inherited}, [SetState("b", "x", "ready")])
    assert lifted is not None and (lifted["x"].admin_state, lifted["x"].op_state) == (0x02, 0)
    v6 = after_ops("b", {}, [AddServer("b", "v", "[::1]:80", "id 9")])
    assert v6 is not None and (v6["v"].addr, v6["v"].port, v6["v"].weight) == ("::1", 80, 1)


def test_what_only_a_read_can_tell_gives_none():
    assert after_ops("b", {}, [AddServer("b", "n", "10.0.0.2:80", "check")]) is None  # no id
    assert after_ops("b", {}, [AddServer("b", "n", "10.0.0.2:80", "id 4 disabled")]) is None
    assert after_ops("b", {}, [AddServer("b", "n", "10.00.0.2:80", "id 4")]) is None
    assert after_ops("b", {}, [AddServer("b", "n", "[::0001]:80", "id 4")]) is None
    assert after_ops("b", {"x": X}, [AddServer("b", "x", "10.0.0.2:80", "id 4")]) is None
    assert after_ops("b", {"x": X}, [SetState("b", "x", "drain")]) is None
    assert after_ops("b", {"x": X}, [SetState("b", "y", "maint")]) is None  # unknown server
    assert after_ops("b", {"x": X}, [SetAddr("b", "x", "host.example", 80)]) is None
    assert after_ops("b", {"x": X}, [SetState("c", "x", "maint")]) is None  # another backend


def test_a_plan_on_the_followed_view_sends_nothing_more():
    """The planner must not send commands again (or other ones) off a view that followed
    its own: whatever it planned, planned again on the result, is nothing."""
    before = [server("10.0.0.1", 80, "x"), server("10.0.0.2", 80, "y"), server("10.0.0.3", 80)]
    after = [
        server("10.0.0.1", 80, "x", weight=4),  # reweighed
        server("10.0.0.2", 80, "y"),  # back from maintenance (below)
        server("10.0.0.9", 80, "n", weight=2),  # added
    ]  # (10.0.0.3 left)
    running = running_from(render([service("b", before, backend_only=True)]))
    assert running.backends is not None
    old = dict(running.backends["b"])
    y = next(name for name in old if name.startswith("y_"))
    old[y] = dataclasses.replace(old[y], admin_state=1, op_state=0)
    config = haproxy_config(defaults=["mode http", "balance roundrobin"])
    spec = render([service("b", after, backend_only=True)], config).backends["b"]
    for removal in ("maint", "delete"):
        caps = Capabilities(version=(2, 6, 12), remove_servers=removal)  # type: ignore[arg-type]
        ops: list = []
        reasons: list = []
        backend_ops(spec, old, caps, ops, reasons)
        assert len(ops) >= 5 and not reasons, (ops, reasons)
        new = after_ops("b", old, ops)
        assert new is not None
        again: list = []
        backend_ops(spec, new, caps, again, reasons)
        assert again == [] and reasons == []


async def test_the_reader_follows_commands_and_reads_them_again_later(monkeypatch):
    monkeypatch.setattr(view_ops, "CHECK_AFTER", 0.0)
    client = ScriptedClient()
    client.state = {n: {"x": srv(n, "x", 1)} for n in "ab"}
    reader = RunningReader([client], None, lambda: 0.0)  # type: ignore[list-item]
    reader.version = (2, 8, 0)
    view = reader.view
    assert view is not None
    await view.read_all()
    reader.hooks = SweepHooks(asyncio.Lock(), lambda: True)
    reads = []

    async def read_apart(backends):
        reads.append(sorted(backends))
        return await view.read_part(client, backends)

    reader._read_apart = read_apart  # type: ignore[method-assign]
    view.take_replaced()
    maint, add = SetState("a", "x", "maint"), AddServer("b", "n", "10.0.0.9:80", "id 5")
    reader.ran([maint, add], [maint])  # b's add failed: b is read back, a is followed
    assert view.backends["a"]["x"].forced_maint and view.stale == {"b"}
    assert view.take_replaced() == {"a"}
    client.state["a"] = {"x": srv("a", "x", 1, admin=1)}  # (what HAProxy says of a now)
    client.state["a"]["x"] = view.backends["a"]["x"]
    for _ in range(20):
        await asyncio.sleep(0)
    assert reads == [["b"], ["a"]] and not view.stale  # then a, once, later
    assert not view.take_replaced() - {"b"}  # (a read as followed: the same map kept)


def test_the_fast_path_for_ipv4_agrees_with_ipaddress():
    """``_canonical`` takes a dotted quad by a regex first: the same verdict as printing
    ``ipaddress``'s address back, for every shape of octet."""
    import ipaddress
    import itertools

    def printed_back(host: str) -> bool:
        try:
            return str(ipaddress.ip_address(host)) == host
        except ValueError:
            return False

    octets = ["0", "00", "01", "99", "100", "255", "256"]
    for parts in itertools.product(octets, repeat=4):
        host = ".".join(parts)
        assert view_ops._canonical(host) is printed_back(host), host
    for host in ["::1", "0:0::1", "1.2.3", "1.2.3.4.5", " 1.2.3.4", "1.2.3.4\n", "a.b.c.d"]:
        assert view_ops._canonical(host) is printed_back(host), host
