"""The order of a backend's runtime ops: capacity comes before it goes.

The planner lists what adds capacity (servers back, weights raised, new servers made
ready) before what takes it away (weights lowered or set to 0, servers put in maint or
deleted), and the runtime client's waves keep that order (``runtime._waves``). A round
that replaces every server of a backend (a redeploy, a blue/green cutover, a SIGHUP that
renames every server) used to put the old ones in maint a wave or two before the new ones
were ready: HAProxy answered 503 meanwhile (measured: 4-12 in 60 swaps under load).
"""

from __future__ import annotations

import dataclasses

from haproxy_helpers import render, running_from, server, service, simulate, with_servers
from hypothesis import given, settings
from hypothesis import strategies as st

from synapse.haproxy.ops import AddServer, DelServer, EnableHealth, Op, SetState, SetWeight
from synapse.haproxy.planner import plan
from synapse.haproxy.running import (
    ADMIN_FORCED_DRAIN,
    ADMIN_FORCED_MAINT,
    CHECK_CONFIGURED,
    Capabilities,
    RunningServer,
    RunningState,
)
from synapse.haproxy.runtime import _waves

V26 = Capabilities(version=(2, 6, 12))
DELETE = Capabilities(version=(2, 6, 12), remove_servers="delete")
A, B = server("10.0.0.1", 8080), server("10.0.0.2", 8080)
C, D = server("10.0.0.3", 8080), server("10.0.0.4", 8080)


def sent(ops: tuple[Op, ...]) -> list[list[str]]:
    """The commands batch by batch, as the runtime client sends them."""
    return [[ops[i].command for i in wave] for wave in _waves(ops)]


def test_a_swap_of_every_server_makes_the_new_ones_ready_before_the_old_ones_go():
    before = render([service("web", [A, B], server_options="check")])
    desired = render([service("web", [C, D], server_options="check")])
    ops = plan(desired, running_from(before), DELETE).ops
    new, old = (C.name, D.name), (A.name, B.name)
    assert [(type(op), op.server) for op in ops] == [
        *((kind, name) for name in new for kind in (AddServer, EnableHealth, SetState)),
        *((kind, name) for name in old for kind in (SetState, DelServer)),
    ]
    assert [op.state for op in ops if isinstance(op, SetState)] == [
        "ready",
        "ready",
        "maint",
        "maint",
    ]
    batches = sent(ops)
    # add, health, then the readies and the maints in one batch (readies first: HAProxy
    # runs a batch in order), and the dels a batch after their maint (idle connections).
    assert len(batches) == 4
    assert batches[2] == [
        *(f"set server web/{n} state ready" for n in new),
        *(f"set server web/{n} state maint" for n in old),
    ]
    assert batches[3] == [f"del server web/{n}" for n in old]
    # Without checks or deletes: add, then ready + maint: no more batches than before.
    before, desired = render([service("web", [A])]), render([service("web", [C])])
    assert sent(plan(desired, running_from(before), V26).ops) == [
        [f"add server web/{C.name} {desired.backends['web'].servers[C.name].address} "
         + desired.backends["web"].servers[C.name].add_options],
        [f"set server web/{C.name} state ready", f"set server web/{A.name} state maint"],
    ]  # fmt: skip


def test_a_single_change_costs_no_more_batches():
    """The express path's common case: one server leaves, comes, or changes weight."""
    base = render([service("web", [A, B], server_options="check")])
    gone = render([service("web", [A], server_options="check")])
    assert len(sent(plan(gone, running_from(base), V26).ops)) == 1
    assert len(sent(plan(gone, running_from(base), DELETE).ops)) == 2
    more = render([service("web", [A, B, C], server_options="check")])
    assert len(sent(plan(more, running_from(base), V26).ops)) == 3  # add, health, ready
    heavier = render([service("web", [A, dataclasses.replace(B, weight=0)])])
    assert len(sent(plan(heavier, running_from(render([service("web", [A, B])])), V26).ops)) == 1


def test_weights_are_raised_before_others_are_lowered():
    """A zone shift (every weight of zone a to 0, zone b's raised) never has every server
    at weight 0 between two commands; a lowered weight waits for the raises too."""
    before = render([service("web", [w(A, 256), w(B, 256), w(C, 0), w(D, 1)])])
    desired = render([service("web", [w(A, 0), w(B, 3), w(C, 256), w(D, 256)])])
    ops = plan(desired, running_from(before), V26).ops
    assert set(ops[:2]) == {SetWeight("web", C.name, 256), SetWeight("web", D.name, 256)}
    assert ops[2:] == (SetWeight("web", B.name, 3), SetWeight("web", A.name, 0))
    assert len(sent(ops)) == 1  # one batch, in that order


def test_a_server_back_gets_its_weight_before_its_ready_and_before_others_go():
    before = render([service("web", [w(A, 10), B])])
    desired = render([service("web", [w(A, 2), C])])
    running = running_from(before, **{A.name: ADMIN_FORCED_MAINT})
    ops = plan(desired, running, V26).ops
    assert [op.command for op in ops] == [
        f"set weight web/{A.name} 2",
        f"set server web/{A.name} state ready",
        f"add server web/{C.name} {ops[2].address} {ops[2].options}",  # type: ignore[attr-defined]
        f"set server web/{C.name} state ready",
        f"set server web/{B.name} state maint",
    ]


def test_an_op_taking_capacity_away_waits_for_its_backend_only():
    """Another backend's removal is not held back by this backend's additions."""
    ops = (
        AddServer("web", "new", "10.0.0.9:80", "id 4"),
        SetState("web", "new", "ready"),
        SetState("api", "old", "maint"),
        SetWeight("web", "kept", 0),
        SetState("web", "old", "maint"),
    )
    assert sent(ops) == [
        ["add server web/new 10.0.0.9:80 id 4", "set server api/old state maint"],
        [
            "set server web/new state ready",
            "set weight web/kept 0",
            "set server web/old state maint",
        ],
    ]


def test_servers_a_reload_must_bring_are_no_capacity_so_nothing_leaves_before_them():
    """A backend whose new servers wait for a reload (a static algorithm, a DNS name, old
    HAProxy) keeps the servers that leave until that reload when none would serve
    meanwhile: it answered 503 to all until the rate-limited reload (measured: 1.9 s)."""
    dns = server("b.example.com", 80)
    for lines, new in ((["balance source"], C), ([], dns)):
        before = render([service("web", [A], backend=lines)])
        desired = render([service("web", [new], backend=lines)])
        result = plan(desired, running_from(before), DELETE)
        assert [kind for kind, _ in result.reload.reasons] == ["new_server"], lines
        assert result.ops == (), lines  # A goes with the reload, not before
    old_haproxy = Capabilities(version=(2, 2, 0))  # (adds no server at runtime)
    result = plan(render([service("web", [C])]), running_from(render([service("web", [A])])),
                  old_haproxy)  # fmt: skip
    assert (result.ops, [kind for kind, _ in result.reload.reasons]) == ((), ["new_server"])
    # Another server still serves: the one that left goes at once (it may be dead).
    before = render([service("web", [A, B], backend=["balance source"])])
    desired = render([service("web", [A, C], backend=["balance source"])])
    assert plan(desired, running_from(before), V26).ops == (SetState("web", B.name, "maint"),)
    # The one that stays is in maintenance and comes back: it serves, the others go.
    running = running_from(before, **{A.name: ADMIN_FORCED_MAINT})
    back = plan(render([service("web", [A, C], backend=["balance source"])]), running, V26)
    assert back.ops == (SetState("web", A.name, "ready"), SetState("web", B.name, "maint"))
    # Only a disabled server would stay: nothing serves, so the leaving ones wait too.
    off = dataclasses.replace(A, registry_options="disabled")
    desired = render([service("web", [off, C], backend=["balance source"])])
    assert plan(desired, running_from(before), V26).ops == ()


def w(s, weight):
    return dataclasses.replace(s, weight=weight)


# --------------------------------------------------------------------------- property

HOSTS = [f"10.0.2.{i}" for i in range(1, 7)]
STATES = [0, 0, ADMIN_FORCED_MAINT, ADMIN_FORCED_DRAIN]


@st.composite
def members(draw):
    hosts = draw(st.sets(st.sampled_from(HOSTS), min_size=1, max_size=len(HOSTS)))
    weights = draw(st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=6, max_size=6))
    return [server(h, 8080, weight=wt) for h, wt in zip(sorted(hosts), weights, strict=False)]


def usable(running: RunningState) -> set[str]:
    """Servers HAProxy may send new traffic to: not in maint or drain, weight above 0."""
    assert running.backends is not None
    return {
        name
        for name, s in running.backends["web"].items()
        if not s.in_maint and not s.forced_drain and s.weight > 0
    }


@given(
    before=members(),
    after=members(),
    states=st.lists(st.sampled_from(STATES), min_size=6, max_size=6),
    check=st.booleans(),
    delete=st.booleans(),
    leftover=st.booleans(),
    static=st.booleans(),
    cut=st.lists(st.booleans(), min_size=6, max_size=6),
)
@settings(max_examples=120, deadline=None)
def test_a_backend_usable_before_and_after_a_plan_stays_usable_at_every_command(
    before, after, states, check, delete, leftover, static, cut
):
    """``static``: an algorithm that takes new servers only with a reload (which the
    ops must not anticipate: the backend stays usable until it comes). ``cut``: servers
    whose checks HAProxy has disabled (an add whose `enable health` never came), which
    get their checks back no later than their ready."""
    options: dict = {"server_options": "check"} if check else {}
    if static:
        options["backend"] = ["balance source"]
    caps = DELETE if delete else V26
    old = render([service("web", before, **options)])
    running = running_from(old, **{s.name: states[i] for i, s in enumerate(before)})
    assert running.backends is not None
    unchecked = [
        dataclasses.replace(running.backends["web"][s.name], check_state=CHECK_CONFIGURED)
        for i, s in enumerate(before)
        if check and cut[i]
    ]
    running = with_servers(running, "web", *unchecked)
    if leftover:  # a server that left earlier, still in maintenance
        gone = RunningServer("web", "gone", 60000, "10.0.3.1", 80, admin_state=ADMIN_FORCED_MAINT)
        running = with_servers(running, "web", gone)
    desired = render([service("web", after, **options)])
    ops = plan(desired, running, caps).ops
    wanted = {s.name for s in after if desired.backends["web"].servers[s.name].weight > 0}
    keep = bool(usable(running)) and bool(wanted)  # (else going through none is no gap)
    state = running
    for i in (i for wave in _waves(ops) for i in wave):  # as the runtime client sends them
        had = usable(state)
        state = simulate(state, desired, (ops[i],))
        assert usable(state) or not keep, f"none usable after {ops[i]}; sent: {sent(ops)}"
        assert state.backends is not None
        unchecked = {n for n, s in state.backends["web"].items() if s.check_disabled}
        assert not (usable(state) - had) & unchecked, f"readied unchecked: {sent(ops)}"
    assert state.backends is not None
    assert not any(s.check_disabled for n, s in state.backends["web"].items() if n in wanted)
    if not static:
        assert usable(state) == wanted
