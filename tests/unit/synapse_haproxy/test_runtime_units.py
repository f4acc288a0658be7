"""How a plan's runtime ops are grouped into waves (``synapse.haproxy.runtime._waves``)."""

from __future__ import annotations

from synapse.haproxy.ops import AddServer, DelServer, EnableHealth, SetState, SetWeight
from synapse.haproxy.runtime import _waves


def test_a_del_goes_with_its_maint_and_other_chains_keep_their_order():
    ops = [
        SetState("web", "old", "maint"),
        DelServer("web", "old"),
        AddServer("web", "new", "10.0.0.2:80", "id 4 check"),
        EnableHealth("web", "new"),
        SetState("web", "new", "ready"),
        SetWeight("web", "w", 3),
        SetState("web", "w", "maint"),
        DelServer("web", "w"),  # after its maint, in the maint's wave (the second)
        DelServer("web", "gone"),  # already in maintenance: alone, first
        SetState("api", "old", "maint"),
        DelServer("web", "x"),  # another server's maint came before: its own first wave
    ]
    lines = [[ops[i].command for i in wave] for wave in _waves(ops)]
    assert lines == [
        [
            "set server web/old state maint",
            "del server web/old",
            "add server web/new 10.0.0.2:80 id 4 check",
            "set weight web/w 3",
            "del server web/gone",
            "set server api/old state maint",
            "del server web/x",
        ],
        ["enable health web/new", "set server web/w state maint", "del server web/w"],
        ["set server web/new state ready"],  # never in the add's wave
    ]
