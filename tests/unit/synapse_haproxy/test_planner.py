"""The planner, pure: no HAProxy, no files. The fake HAProxy is in haproxy_helpers."""

from __future__ import annotations

import dataclasses

from haproxy_helpers import (
    haproxy_config,
    render,
    running_from,
    server,
    service,
    simulate,
    with_servers,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from synapse.haproxy.ops import (
    AddServer,
    DelServer,
    EnableHealth,
    Plan,
    SetAddr,
    SetState,
    SetWeight,
)
from synapse.haproxy.planner import plan
from synapse.haproxy.running import (
    ADMIN_CONFIG_MAINT,
    ADMIN_FORCED_DRAIN,
    ADMIN_FORCED_MAINT,
    CHECK_CONFIGURED,
    Capabilities,
    RunningServer,
    RunningState,
)

V26 = Capabilities(version=(2, 6, 12))
A = server("10.0.0.1", 8080)
B = server("10.0.0.2", 8080)
C = server("10.0.0.3", 8080)


def kinds(result: Plan) -> list[str]:
    return [op.label for op in result.ops]


def reasons(result: Plan) -> list[str]:
    assert result.reload is not None, f"expected a reload, got {result}"
    return [kind for kind, _ in result.reload.reasons]


def settle(desired, running, caps=V26) -> RunningState:
    """Plan, apply the runtime ops, and check the state reached needs nothing more."""
    first = plan(desired, running, caps)
    assert first.reload is None, first.reload
    after = simulate(running, desired, first.ops)
    again = plan(desired, after, caps)
    assert again.empty, f"not idempotent: {again}"
    return after


# --------------------------------------------------------------------------- steady state


def test_unchanged_state_needs_nothing():
    desired = render([service("web", [A, B]), service("api", [C], port=3001)])
    assert plan(desired, running_from(desired), V26).empty


def test_unchanged_without_runtime_api_needs_nothing():
    desired = render([service("web", [A, B])])
    running = RunningState(backends=None, config=desired.parsed)
    assert plan(desired, running, Capabilities(version=None, runtime_api=False)).empty


# --------------------------------------------------------------------------- membership


def test_server_that_left_goes_to_maintenance():
    before = render([service("web", [A, B])])
    desired = render([service("web", [A])])
    result = plan(desired, running_from(before), V26)
    assert result.reload is None
    assert result.ops == (SetState("web", B.name, "maint"),)
    settle(desired, running_from(before))


def test_server_already_in_maintenance_is_left_alone():
    before = render([service("web", [A, B])])
    desired = render([service("web", [A])])
    running = running_from(before, **{B.name: ADMIN_FORCED_MAINT})
    assert plan(desired, running, V26).empty


def test_server_disabled_in_config_but_readied_counts_as_serving():
    # admin_state 0x04 alone: `disabled` in the config, lifted by `state ready` (serving).
    before = render([service("web", [A, B])])
    desired = render([service("web", [A])])
    running = running_from(before, **{B.name: ADMIN_CONFIG_MAINT})
    assert plan(desired, running, V26).ops == (SetState("web", B.name, "maint"),)


def test_remove_servers_delete_deletes_after_maintenance():
    before = render([service("web", [A, B])])
    desired = render([service("web", [A])])
    caps = Capabilities(version=(2, 6, 12), remove_servers="delete")
    result = plan(desired, running_from(before), caps)
    assert result.ops == (SetState("web", B.name, "maint"), DelServer("web", B.name))
    after = settle(desired, running_from(before), caps)
    assert after.backends is not None and B.name not in after.backends["web"]
    # Already in maintenance (a del refused earlier because of connections): only the del.
    running = running_from(before, **{B.name: ADMIN_FORCED_MAINT})
    assert plan(desired, running, caps).ops == (DelServer("web", B.name),)


def test_server_back_from_maintenance_is_made_ready_without_an_add():
    desired = render([service("web", [A, B])])
    running = running_from(desired, **{B.name: ADMIN_FORCED_MAINT})
    result = plan(desired, running, V26)
    assert result.ops == (SetState("web", B.name, "ready"),)
    settle(desired, running)


def test_disabled_option_keeps_a_server_in_maintenance():
    """HAProxy starts a `disabled` server in maintenance (admin 0x05): it stays there."""
    off = dataclasses.replace(B, registry_options="disabled")
    desired = render([service("web", [A, off])])
    running = running_from(desired, **{B.name: ADMIN_FORCED_MAINT | ADMIN_CONFIG_MAINT})
    assert plan(desired, running, V26).empty
    # A serving server whose options gain `disabled` goes into maintenance at runtime.
    assert plan(desired, running_from(desired), V26).ops == (SetState("web", B.name, "maint"),)
    # `disabled` inherited from default-server: added, but not made ready.
    config = haproxy_config(defaults=["mode http", "default-server disabled"])
    desired = render([service("web", [A, B])], config)
    running = running_from(render([service("web", [A])], config), **{A.name: 0x05})
    assert [type(op) for op in plan(desired, running, V26).ops] == [AddServer]


def test_drained_server_is_made_ready():
    desired = render([service("web", [A])])
    running = running_from(desired, **{A.name: ADMIN_FORCED_DRAIN})
    assert plan(desired, running, V26).ops == (SetState("web", A.name, "ready"),)


def test_brand_new_server_is_added_with_full_options_then_enabled():
    config = haproxy_config(defaults=[*haproxy_config().defaults, "default-server inter 2s"])
    before = render([service("web", [A], server_options="check rise 2")], config)
    desired = render([service("web", [A, B], server_options="check rise 2")], config)
    result = plan(desired, running_from(before), V26)
    assert result.reload is None
    add, health, ready = result.ops
    assert isinstance(add, AddServer) and add.server == B.name
    assert add.address == "10.0.0.2:8080"
    spec = desired.backends["web"].servers[B.name]
    # default-server options are spelled out; the id matches the config line; no cookie;
    # and the idle-connection pool configured servers get by default.
    pool = "pool-max-conn -1 pool-purge-delay 5s"
    assert add.options == f"inter 2s id {spec.id} {pool} check rise 2"
    assert "cookie" not in add.options
    assert health == EnableHealth("web", B.name)
    assert ready == SetState("web", B.name, "ready")
    settle(desired, running_from(before))


def test_a_server_added_but_never_health_enabled_gets_its_checks_before_its_ready():
    """An `add server` whose `enable health` never came (synapse stopped between the two
    round trips, or the command failed) leaves the server in maint, its checks configured
    but disabled: made ready as it was, it took traffic unchecked for good."""
    desired = render([service("web", [A, B], server_options="check")])
    assert desired.backends["web"].servers[B.name].check
    found = running_from(desired)
    assert found.backends is not None
    cut = dataclasses.replace(
        found.backends["web"][B.name], admin_state=ADMIN_FORCED_MAINT, check_state=CHECK_CONFIGURED
    )
    running = with_servers(found, "web", cut)
    assert plan(desired, running, V26).ops == (
        EnableHealth("web", B.name),
        SetState("web", B.name, "ready"),
    )
    assert not settle(desired, running).backends["web"][B.name].check_disabled  # type: ignore[index]
    # Serving with its checks disabled (`disable health` by hand): enabled again, alone.
    running = with_servers(found, "web", dataclasses.replace(cut, admin_state=0))
    assert plan(desired, running, V26).ops == (EnableHealth("web", B.name),)


def test_added_server_without_check_gets_no_enable_health():
    before = render([service("web", [A])])
    desired = render([service("web", [A, B])])
    assert kinds(plan(desired, running_from(before), V26)) == ["add_server", "set_ready"]


def test_arrivals_are_ready_before_departures():
    """Capacity comes before it goes (the whole order: test_plan_order.py)."""
    before = render([service("web", [A, B])])
    desired = render([service("web", [A, C])])
    assert kinds(plan(desired, running_from(before), V26)) == [
        "add_server",
        "set_ready",
        "set_maint",
    ]


def test_weight_change_uses_set_weight():
    before = render([service("web", [A, dataclasses.replace(B, weight=10)])])
    desired = render([service("web", [A, dataclasses.replace(B, weight=3)])])
    result = plan(desired, running_from(before), V26)
    assert result.ops == (SetWeight("web", B.name, 3),)
    settle(desired, running_from(before))


def test_weight_comes_from_server_options_when_the_record_has_none():
    desired = render([service("web", [A], server_options="weight 20")])
    running = running_from(desired)
    assert running.backends is not None
    running = with_servers(
        running, "web", dataclasses.replace(running.backends["web"][A.name], weight=1)
    )
    assert plan(desired, running, V26).ops == (SetWeight("web", A.name, 20),)


def test_changed_address_of_a_same_named_server_uses_set_addr():
    desired = render([service("web", [A])])
    running = running_from(desired)
    assert running.backends is not None
    moved = dataclasses.replace(running.backends["web"][A.name], addr="10.9.9.9", port=1)
    result = plan(desired, with_servers(running, "web", moved), V26)
    assert result.ops == (SetAddr("web", A.name, "10.0.0.1", 8080),)


def test_static_server_lines_of_the_service_are_never_touched():
    desired = render([service("web", [A], backend=["server backup1 10.1.1.1:80 backup"])])
    running = running_from(desired)
    assert plan(desired, running, V26).empty


# --------------------------------------------------------------------------- reloads


def test_new_service_needs_a_reload():
    before = render([service("web", [A])])
    desired = render([service("web", [A]), service("api", [B], port=3001)])
    result = plan(desired, running_from(before), V26)
    assert "service_added" in reasons(result)
    assert any("'backend api' added" in d for _, d in result.reload.reasons)  # type: ignore[union-attr]


def test_removed_service_needs_a_reload():
    before = render([service("web", [A]), service("api", [B], port=3001)])
    desired = render([service("web", [A])])
    assert "service_removed" in reasons(plan(desired, running_from(before), V26))


def test_changed_frontend_lines_port_or_options_need_a_reload():
    base = render([service("web", [A, B])])
    for changed in (
        {"port": 3999},
        {"frontend": ["option httplog"]},
        {"backend": ["retries 5"]},
        {"listen": ["option redispatch"]},
        {"bind_options": "accept-proxy"},
    ):
        desired = render([service("web", [A, B], **changed)])
        assert reasons(plan(desired, running_from(base), V26))[0] == "config", changed
    desired = render([service("web", [A, B], server_options="maxconn 5")])
    assert "server_options" in reasons(plan(desired, running_from(base), V26))


def test_changed_registry_options_of_a_server_need_a_reload():
    before = render([service("web", [A])])
    desired = render([service("web", [dataclasses.replace(A, registry_options="backup")])])
    result = plan(desired, running_from(before), V26)
    assert reasons(result) == ["server_options"]


def test_non_dynamic_algorithms_reload_for_new_servers():
    for lines in (["balance static-rr"], ["balance source"], ["balance uri"]):
        before = render([service("web", [A], backend=lines)])
        desired = render([service("web", [A, B], backend=lines)])
        assert reasons(plan(desired, running_from(before), V26)) == ["new_server"], lines
    for dynamic in (["balance source", "hash-type consistent"], ["balance random(2)"]):
        before = render([service("web", [A], backend=dynamic)])
        desired = render([service("web", [A, B], backend=dynamic)])
        assert plan(desired, running_from(before), V26).reload is None, dynamic


def test_non_dynamic_algorithm_reloads_for_weight_changes():
    lines = ["balance static-rr"]
    before = render([service("web", [dataclasses.replace(A, weight=1)], backend=lines)])
    desired = render([service("web", [dataclasses.replace(A, weight=5)], backend=lines)])
    assert reasons(plan(desired, running_from(before), V26)) == ["weight"]


def test_old_haproxy_reloads_for_new_servers_but_not_for_removals():
    before = render([service("web", [A, B])])
    caps = Capabilities(version=(2, 2, 0))
    assert plan(render([service("web", [A])]), running_from(before), caps).reload is None
    desired = render([service("web", [A, B, C])])
    assert reasons(plan(desired, running_from(before), caps)) == ["new_server"]


def test_new_server_with_a_dns_name_needs_a_reload():
    before = render([service("web", [A])])
    desired = render([service("web", [A, server("b.example.com", 80)])])
    assert reasons(plan(desired, running_from(before), V26)) == ["new_server"]


def test_cookie_persistence_backends_reload_for_new_servers():
    lines = ["cookie SRV insert indirect nocache"]
    before = render([service("web", [A], backend=lines)])
    desired = render([service("web", [A, B], backend=lines)])
    assert reasons(plan(desired, running_from(before), V26)) == ["new_server"]


def test_server_options_that_added_servers_refuse_need_a_reload():
    before = render([service("web", [A], server_options="resolvers dns")])
    desired = render([service("web", [A, B], server_options="resolvers dns")])
    assert reasons(plan(desired, running_from(before), V26)) == ["new_server"]


def test_without_runtime_api_membership_changes_reload():
    before = render([service("web", [A])])
    desired = render([service("web", [A, B])])
    running = RunningState(backends=None, config=before.parsed)
    caps = Capabilities(version=None, runtime_api=False)
    assert reasons(plan(desired, running, caps)) == ["no_runtime"]


def test_silent_runtime_api_means_a_reload():
    desired = render([service("web", [A])])
    running = RunningState(backends=None, config=desired.parsed, runtime_error="refused")
    result = plan(desired, running, V26)
    assert reasons(result) == ["runtime_unavailable"]
    assert "refused" in result.reload.summary  # type: ignore[union-attr]


def test_missing_config_file_means_a_reload():
    desired = render([service("web", [A])])
    running = dataclasses.replace(running_from(desired), config=None, config_missing=True)
    assert reasons(plan(desired, running, V26)) == ["config"]


def test_plan_with_a_reload_still_carries_valid_runtime_ops():
    before = render([service("web", [A, B])])
    desired = render([service("web", [A]), service("api", [C], port=3001)])
    result = plan(desired, running_from(before), V26)
    assert result.reload is not None
    assert result.ops == (SetState("web", B.name, "maint"),)


def test_disabled_service_is_not_rendered_and_its_backend_is_removed():
    before = render([service("web", [A]), service("api", [B], port=3001)])
    desired = render([service("web", [A]), service("api", [B], port=3001, disabled=True)])
    assert "backend api" not in desired.text
    assert "service_removed" in reasons(plan(desired, running_from(before), V26))


# --------------------------------------------------------------------------- properties

HOSTS = [f"10.0.1.{i}" for i in range(1, 9)]


@st.composite
def membership(draw):
    hosts = draw(st.sets(st.sampled_from(HOSTS), max_size=len(HOSTS)))
    weights = draw(st.lists(st.one_of(st.none(), st.integers(0, 256)), min_size=8, max_size=8))
    return [server(h, 8080, weight=w) for h, w in zip(sorted(hosts), weights, strict=False)]


@given(
    before=membership(),
    after=membership(),
    admin=st.lists(st.sampled_from([0, ADMIN_FORCED_MAINT, ADMIN_FORCED_DRAIN]), min_size=8),
    delete=st.booleans(),
    leftovers=st.sets(st.sampled_from(HOSTS)),
)
@settings(max_examples=50, deadline=None)
def test_membership_changes_never_reload_and_converge(before, after, admin, delete, leftovers):
    """Any change of servers/weights/states on 2.6 is runtime-only and reaches a fixed point."""
    config = haproxy_config()
    caps = Capabilities(version=(2, 6, 12), remove_servers="delete" if delete else "maint")
    old = render([service("web", before)], config)
    states = {s.name: admin[i] for i, s in enumerate(before)}
    running = running_from(old, **states)
    # Servers that left earlier and are still in HAProxy, in maintenance.
    extra = [server(h, 9090) for h in sorted(leftovers)]
    running = with_servers(
        running,
        "web",
        *(
            RunningServer("web", s.name, 60000 + i, s.host, s.port, admin_state=ADMIN_FORCED_MAINT)
            for i, s in enumerate(extra)
        ),
    )
    desired = render([service("web", after)], config, running_ids={"web": _ids(running)})
    result = plan(desired, running, caps)
    assert result.reload is None, result.reload
    applied = simulate(running, desired, result.ops)
    assert plan(desired, applied, caps).empty
    assert applied.backends is not None
    live = {n for n, s in applied.backends["web"].items() if not s.in_maint}
    assert live == {s.name for s in after}
    for s in after:
        spec = desired.backends["web"].servers[s.name]
        assert applied.backends["web"][s.name].weight == spec.weight


def _ids(running: RunningState) -> dict[str, int]:
    assert running.backends is not None
    return {n: s.id for n, s in running.backends["web"].items()}


def test_server_lines_differing_only_in_their_id_need_no_reload():
    """Lines of the same cookie and tail are not parsed again (the id is the runtime's);
    another cookie or another option still is a reason."""
    from types import SimpleNamespace

    from synapse.haproxy.configtext import ServerLine
    from synapse.haproxy.planner import _server_line_changes

    line = ServerLine("a", "10.0.0.1:80", 3, None, "weight 1 check")
    spec = SimpleNamespace(static_servers=frozenset())

    def changes(new: ServerLine) -> list[tuple[str, str]]:
        running = SimpleNamespace(servers={"web": {"a": line}})
        parsed = SimpleNamespace(servers={"web": {"a": new}})
        desired = SimpleNamespace(parsed=parsed, backends={"web": spec})
        return _server_line_changes(running, desired)  # type: ignore[arg-type]

    assert changes(line._replace(id=9)) == [] and changes(line._replace(id=None)) == []
    assert changes(line._replace(tail="weight 4 check")) == []  # (weight: the runtime's)
    assert [r for r, _ in changes(line._replace(cookie="a"))] == ["server_options"]
    assert [r for r, _ in changes(line._replace(tail="weight 1 backup"))] == ["server_options"]
