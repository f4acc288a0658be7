"""How a plan's runtime ops are grouped into waves (``synapse.haproxy.runtime._waves``)."""

from __future__ import annotations

from synapse.haproxy.ops import AddServer, DelServer, EnableHealth, SetState, SetWeight
from synapse.haproxy.runtime import _waves


def test_each_server_s_later_ops_wait_for_its_earlier_ones():
    """A del waits for its maint's answer and a ready for its add's (HAProxy 2.6 refuses a
    del in the maint's batch while idle connections remain; see ``_waves``)."""
    ops = [
        SetState("web", "old", "maint"),
        DelServer("web", "old"),
        AddServer("web", "new", "10.0.0.2:80", "id 4 check"),
        EnableHealth("web", "new"),
        SetState("web", "new", "ready"),
        SetWeight("web", "w", 3),
        DelServer("api", "gone"),  # already in maintenance: the first wave
    ]
    lines = [[ops[i].command for i in wave] for wave in _waves(ops)]
    assert lines == [
        [
            "set server web/old state maint",
            "add server web/new 10.0.0.2:80 id 4 check",
            "set weight web/w 3",
            "del server api/gone",
        ],
        ["del server web/old", "enable health web/new"],
        ["set server web/new state ready"],
    ]


def test_taking_capacity_away_waits_for_the_ops_listed_before_it_in_its_backend():
    """Maint, drain, del and weight 0 go no earlier than the other ops of their backend
    listed before them (in the same batch after them, or later): the planner lists them
    last, so a swap's old servers go after the new ones are ready (test_plan_order.py)."""
    ops = [
        AddServer("web", "new", "10.0.0.2:80", "id 4 check"),
        EnableHealth("web", "new"),
        SetState("web", "new", "ready"),
        SetState("web", "old", "maint"),
        DelServer("web", "old"),
        DelServer("web", "gone"),  # already in maintenance
        SetState("web", "idle", "drain"),
        SetWeight("web", "w", 0),
        SetState("api", "x", "maint"),  # another backend: the first wave
    ]
    lines = [[ops[i].command for i in wave] for wave in _waves(ops)]
    assert lines == [
        ["add server web/new 10.0.0.2:80 id 4 check", "set server api/x state maint"],
        ["enable health web/new"],
        [
            "set server web/new state ready",
            "set server web/old state maint",
            "del server web/gone",
            "set server web/idle state drain",
            "set weight web/w 0",
        ],
        ["del server web/old"],
    ]
