"""smartstack/http_slots.py: which admin connections are served when too many are open."""

from __future__ import annotations

from smartstack.http_slots import Slots


def test_at_the_limit_the_oldest_idle_connection_makes_room() -> None:
    slots: Slots[str] = Slots(limit=3, ceiling=5)
    assert [slots.admit(c) for c in "abc"] == [("serve", None)] * 3
    for conn in "abc":
        slots.idle(conn)
    slots.active("a")  # a has started a request: it keeps its slot
    slots.idle("a")  # and waits again: now the newest idle one
    assert slots.admit("d") == ("serve", "b")
    assert slots.admit("e") == ("serve", "c")
    assert slots.admit("f") == ("serve", "a")
    assert slots.open() == 3
    slots.release("b")  # the closed one going away later changes nothing
    assert slots.open() == 3


def test_with_none_idle_new_ones_are_read_for_a_probe_up_to_the_ceiling() -> None:
    slots: Slots[str] = Slots(limit=2, ceiling=4)
    slots.admit("a"), slots.admit("b")
    slots.idle("a")
    slots.active("a")  # sending a request (a slowloris too): not idle
    assert slots.admit("c") == ("probe_only", None)
    assert slots.admit("d") == ("probe_only", None)
    assert slots.admit("e") == ("drop", None)  # hard ceiling: fds and buffers bounded
    slots.release("c")
    assert slots.admit("f") == ("probe_only", None)
    slots.release("a")
    assert slots.admit("g") == ("serve", None)
    slots.idle("c")  # a probe-only connection is never taken for an idle one
    assert slots.admit("h") == ("drop", None)


def test_only_one_idle_for_the_grace_makes_room_a_younger_one_may_have_its_request_on_the_way() -> (
    None
):
    now = [0.0]
    slots: Slots[str] = Slots(limit=2, ceiling=4, grace=1.0, clock=lambda: now[0])
    slots.admit("a"), slots.admit("b")
    slots.idle("a"), slots.idle("b")  # new connections: nothing read yet
    now[0] = 0.5
    assert slots.admit("c") == ("probe_only", None)  # a burst: a and b are kept
    now[0] = 0.6
    slots.active("a"), slots.idle("a")  # a request: a waits again from now
    now[0] = 1.0
    assert slots.admit("d") == ("serve", "b")
    now[0] = 1.5
    assert slots.admit("e") == ("probe_only", None)  # a has waited 0.9 s only
    now[0] = 1.6
    assert slots.admit("f") == ("serve", "a")


def test_what_happened_at_the_limit_is_reported_at_most_once_per_interval() -> None:
    now = [100.0]
    slots: Slots[str] = Slots(limit=1, ceiling=2, report_every=60.0, clock=lambda: now[0])
    slots.admit("a")
    assert slots.due_report() is None  # nothing happened at the limit
    slots.idle("a")
    slots.admit("b")
    assert slots.due_report() == {"idle_closed": 1, "probe_only": 0, "dropped": 0}
    slots.admit("c"), slots.admit("d"), slots.admit("e")
    now[0] += 59.0
    assert slots.due_report() is None
    now[0] += 1.0
    assert slots.due_report() == {"idle_closed": 0, "probe_only": 1, "dropped": 2}
    assert slots.due_report() is None
