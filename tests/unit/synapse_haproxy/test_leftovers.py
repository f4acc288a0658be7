"""Leftovers in maintenance are bounded per backend (``synapse.haproxy.leftovers``): pure
decisions through the planner, no HAProxy."""

from __future__ import annotations

import pytest
from haproxy_helpers import render, running_from, server, service, simulate, with_servers

from synapse.haproxy import answers
from synapse.haproxy.answers import parse_servers_state
from synapse.haproxy.leftovers import MIN_CAP, cap
from synapse.haproxy.ops import AddServer, DelLeftover, DelServer, SetState
from synapse.haproxy.planner import plan
from synapse.haproxy.running import ADMIN_FORCED_MAINT, Capabilities, RunningServer, RunningState
from synapse.haproxy.sockets import UnexpectedAnswer
from synapse.haproxy.view_ops import after_ops

V26 = Capabilities(version=(2, 6, 12))
A = server("10.0.0.1", 8080)


def leftover(i: int, maint: bool = True) -> RunningServer:
    """A server that left, changed (put into maintenance) at second 1000 - i: the higher
    the index, the older. Names sort the other way round: an order by name is not by age."""
    admin = ADMIN_FORCED_MAINT if maint else 0
    return RunningServer("web", f"pod{i:03d}", 5000 + i, f"10.1.0.{i}", 8080,
                         admin_state=admin, changed_at=1000 - i)  # fmt: skip


def with_leftovers(desired, count: int) -> RunningState:
    """HAProxy running ``desired`` plus ``count`` leftovers in maintenance (0..count-1)."""
    return with_servers(running_from(desired), "web", *(leftover(i) for i in range(count)))


def deleted(result) -> list[str]:
    return [op.server for op in result.ops if isinstance(op, DelLeftover)]


def test_a_backend_keeps_up_to_its_cap_of_leftovers():
    desired = render([service("web", [A])])
    assert cap(desired.backends["web"]) == MIN_CAP == 16
    assert plan(desired, with_leftovers(desired, 16), V26).empty


def test_beyond_the_cap_the_ones_longest_in_maintenance_are_deleted():
    desired = render([service("web", [A])])
    running = with_leftovers(desired, 20)
    result = plan(desired, running, V26)
    assert result.reload is None
    # pod019..pod016 changed first (second 981-984): the 4 beyond the cap of 16
    assert deleted(result) == ["pod019", "pod018", "pod017", "pod016"]
    assert result.ops == tuple(DelLeftover("web", name) for name in deleted(result))
    assert "web" in result.active  # (planned again: a refused delete is asked again)
    after = simulate(running, desired, result.ops)
    assert after.backends is not None and len(after.backends["web"]) == 1 + 16
    assert plan(desired, after, V26).empty


def test_a_refused_delete_is_planned_again():
    """HAProxy refuses `del server` while the server has connections: nothing changed, so
    the next plan of the backend asks for the same delete (DelServer: tolerated)."""
    desired = render([service("web", [A])])
    running = with_leftovers(desired, 17)
    assert deleted(plan(desired, running, V26)) == ["pod016"]
    assert deleted(plan(desired, running, V26)) == ["pod016"]
    assert DelLeftover.tolerated and isinstance(DelLeftover("web", "x"), DelServer)


def test_servers_leaving_now_are_never_deleted_in_the_same_plan():
    """They get their `state maint` (in-flight requests finish there); the older ones in
    maintenance go instead, even though the ones leaving changed longer ago."""
    desired = render([service("web", [A])])
    leaving = [leftover(i, maint=False) for i in (100, 101, 102)]  # changed at 900-898
    running = with_servers(with_leftovers(desired, 16), "web", *leaving)
    result = plan(desired, running, V26)
    maints = [op.server for op in result.ops if isinstance(op, SetState)]
    assert maints == ["pod100", "pod101", "pod102"]
    assert deleted(result) == ["pod015", "pod014", "pod013"]
    # the deletes come after the maints (capacity goes last, deletes of leftovers too)
    kinds = [op.label for op in result.ops]
    assert kinds == ["set_maint"] * 3 + ["del_leftover"] * 3


def test_the_cap_is_the_number_of_wanted_servers_when_larger():
    """A redeploy that replaces all of 20 servers keeps the 20 old ones in maintenance."""
    live = [server(f"10.0.2.{i}", 8080) for i in range(20)]
    desired = render([service("web", live)])
    assert cap(desired.backends["web"]) == 20
    assert plan(desired, with_leftovers(desired, 20), V26).empty
    assert deleted(plan(desired, with_leftovers(desired, 21), V26)) == ["pod020"]


@pytest.mark.parametrize(
    ("caps", "balance"),
    [
        (Capabilities(version=(2, 2, 30)), "roundrobin"),  # no `add server`, no `del server`
        (Capabilities(version=None), "roundrobin"),  # version unknown
        (V26, "static-rr"),  # a returning server would need a reload to come back
        (V26, "source"),
    ],
)
def test_no_delete_where_a_server_cannot_come_back_at_runtime(caps, balance):
    """There every new server comes with a reload, which drops the leftovers: they cannot
    pile up, and one deleted that comes back would cost a reload, not a `state ready`."""
    desired = render([service("web", [A], backend=[f"balance {balance}"])])
    result = plan(desired, with_leftovers(desired, 40), caps)
    assert not deleted(result) and result.reload is None


def test_remove_servers_delete_deletes_each_once():
    desired = render([service("web", [A])])
    caps = Capabilities(version=(2, 6, 12), remove_servers="delete")
    result = plan(desired, with_leftovers(desired, 20), caps)
    assert not deleted(result)
    assert sorted(op.server for op in result.ops) == [f"pod{i:03d}" for i in range(20)]


# --------------------------------------------------------------------------- their age

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_state srv_port
3 web 5 a 10.0.0.1 0 1 1 1 7200 0 8080
3 web 6 b 10.0.0.2 0 1 1 1 5 0 8080
"""  # noqa: E501


def test_the_time_of_the_last_change_is_read_from_servers_state(monkeypatch):
    """srv_time_since_last_change (HAProxy resets it at a maint) gives ``changed_at``; a
    known server keeps its own (the seconds since grow, the change stays), and a changed
    row is new, at its new time."""
    clock = [10_000.4]
    monkeypatch.setattr(answers.time, "monotonic", lambda: clock[0])
    a, b = parse_servers_state(STATE)
    assert (a.changed_at, b.changed_at) == (10_000 - 7200, 10_000 - 5)
    clock[0] += 60
    later = STATE.replace(" 7200 ", " 7260 ").replace(" 5 0 ", " 65 0 ")
    again = parse_servers_state(later, {"a": a, "b": b})
    assert again[0] is a and again[1] is b
    ready = later.replace("10.0.0.2 0 1 1 1 65", "10.0.0.2 2 0 1 1 0")
    assert parse_servers_state(ready, {"a": a, "b": b})[1].changed_at == 10_060
    # without the column (a header that does not name it): changed at the read
    header = "# be_name srv_name srv_addr srv_check_state srv_id srv_port srv_op_state " \
        "srv_admin_state srv_uweight srv_iweight"  # fmt: skip
    (c,) = parse_servers_state(f"1\n{header}\nweb c 10.0.0.3 0 7 80 0 1 1 1\n")
    assert c.changed_at == 10_060
    with pytest.raises(UnexpectedAnswer):
        parse_servers_state(STATE.replace(" 7200 ", " soon "))


def test_the_view_follows_the_time_of_commands():
    x = RunningServer("web", "x", 3, "10.0.0.1", 80, changed_at=5)
    assert x == RunningServer("web", "x", 3, "10.0.0.1", 80, changed_at=9)  # (not compared)
    maint = after_ops("web", {"x": x}, [SetState("web", "x", "maint")], now=700)
    assert maint is not None and maint["x"].changed_at == 700
    ready = after_ops("web", maint, [SetState("web", "x", "ready")], now=800)
    assert ready is not None and ready["x"].changed_at == 800
    added = after_ops("web", {}, [AddServer("web", "n", "10.0.0.2:80", "id 4")], now=900)
    assert added is not None and added["n"].changed_at == 900
