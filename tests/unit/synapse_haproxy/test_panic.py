"""The panic's look (synapse.haproxy.panic): rows of `show servers state <backend>`, what
is held and the time -> commands. Pure: no HAProxy here (tests/integration has the real
one)."""

from __future__ import annotations

import pytest
from haproxy_helpers import render, server, service

from synapse.haproxy.ops import EnableHealth
from synapse.haproxy.panic import HANA, L4CON, L4OK, L4TOUT, L7TOUT, Held, Rows, look, servers_of
from synapse.haproxy.planner import backend_ops
from synapse.haproxy.running import CHECK_CONFIGURED, Capabilities, RunningServer
from synapse.haproxy.sockets import UnexpectedAnswer

UP, DOWN = 2, 0
CHECKED, DISABLED = 6, 2  # srv_check_state: configured + enabled; configured alone
HOLD, RECHECK = 10.0, 1.0


def row(name: str, op: int = DOWN, status: int = L4TOUT, **kw: int) -> RunningServer:
    fields = {"admin_state": 0, "weight": 1, "check_state": CHECKED} | kw
    return RunningServer("b", name, 1, "127.0.0.1", 8080, op, check_status=status, **fields)


def rows(*given: RunningServer) -> Rows:
    return {r.name: r for r in given}


def read(found: RunningServer) -> tuple[str, int, int, int, int, int]:
    """What a panic reads of a server (check_status is not compared by ``==``)."""
    return (found.name, found.op_state, found.admin_state, found.weight, found.check_status,
            found.check_state)  # fmt: skip


def test_every_server_timed_out_all_are_put_back_for_the_hold() -> None:
    step = look("b", rows(row("s1"), row("s2", status=L7TOUT)), None, 100.0, HOLD, RECHECK)
    assert step.commands == [
        "disable health b/s1", "set server b/s1 health up",
        "disable health b/s2", "set server b/s2 health up",
    ]  # fmt: skip
    assert step.held == Held(100.0, 110.0, frozenset({"s1", "s2"}))
    assert step.look_again == 100.0 + RECHECK  # (while held: a server usable again ends it)
    assert step.started == {"s1": "L4TOUT", "s2": "L7TOUT"}


def test_a_usable_server_means_no_panic() -> None:
    """The threshold is no usable server at all: a panic never takes traffic from one."""
    for usable in (row("s2", op=UP, status=L4OK), row("s2", op=UP, status=L4TOUT)):
        step = look("b", rows(row("s1"), usable), None, 0.0, HOLD, RECHECK)
        assert step.commands == [] and step.held is None


def test_a_server_up_but_in_maintenance_drain_or_weight_0_is_not_usable() -> None:
    for other in (row("s2", op=UP, admin_state=1), row("s2", op=UP, admin_state=8),
                  row("s2", op=UP, weight=0)):  # fmt: skip
        step = look("b", rows(row("s1"), other), None, 0.0, HOLD, RECHECK)
        assert step.started == {"s1": "L4TOUT"}, other


def test_a_down_server_whose_last_check_passed_is_put_back() -> None:
    """`observe` marked it at one failed connection; its check passes, `rise` is to come."""
    step = look("b", rows(row("s1", status=L4OK), row("s2", status=HANA)), None, 0.0, HOLD,
                RECHECK)  # fmt: skip
    assert step.started == {"s1": "L4OK"} and step.look_again == RECHECK


def test_refused_servers_stay_down() -> None:
    """L4CON: nothing listens (dead, or a container's ports about to come back: the Lua wait
    covers that). Only the slow one comes back."""
    step = look("b", rows(row("s1", status=L4CON), row("s2")), None, 0.0, HOLD, RECHECK)
    assert step.started == {"s2": "L4TOUT"}
    assert all("s1" not in c for c in step.commands)
    only_dead = look("b", rows(row("s1", status=L4CON)), None, 0.0, HOLD, RECHECK)
    assert only_dead.commands == [] and only_dead.held is None and only_dead.look_again is None


def test_maintenance_unchecked_and_weight_0_servers_are_not_put_back() -> None:
    given = rows(row("m", admin_state=1), row("u", check_state=0), row("w", weight=0),
                 row("d", check_state=DISABLED))  # fmt: skip
    step = look("b", given, None, 0.0, HOLD, RECHECK)
    assert step.commands == [] and step.held is None


def test_an_observe_mark_is_looked_at_again_after_the_check() -> None:
    """HANA: `observe` marked it (a refusal or a timeout: undecided)."""
    step = look("b", rows(row("s1", status=HANA)), None, 5.0, HOLD, RECHECK)
    assert step.commands == [] and step.look_again == 5.0 + RECHECK
    mixed = look("b", rows(row("s1", status=HANA), row("s2")), None, 5.0, HOLD, RECHECK)
    assert mixed.started == {"s2": "L4TOUT"} and mixed.look_again == 5.0 + RECHECK


def test_during_the_hold_an_observe_mark_is_lifted_and_nothing_else_sent() -> None:
    held = Held(0.0, HOLD, frozenset({"s1", "s2"}))
    marked = rows(row("s1", status=HANA, check_state=DISABLED),
                  row("s2", op=UP, check_state=DISABLED))  # fmt: skip
    step = look("b", marked, held, 3.0, HOLD, RECHECK)
    assert step.commands == ["set server b/s1 health up"]
    assert step.raised == ("s1",) and step.held == Held(0.0, HOLD, held.servers, raised=1)
    calm = rows(row("s1", op=UP, check_state=DISABLED), row("s2", op=UP, check_state=DISABLED))
    assert look("b", calm, held, 3.0, HOLD, RECHECK).commands == []


def test_a_server_added_during_the_hold_is_left_to_its_checks() -> None:
    held = Held(0.0, HOLD, frozenset({"s1"}))
    step = look("b", rows(row("s1", op=UP), row("new")), held, 3.0, HOLD, RECHECK)
    assert step.commands == [] and step.held == held


def test_during_the_hold_with_no_usable_server_a_decided_one_joins() -> None:
    """The HANA ones of the start, decided since by their check (alive or slow), join when
    nothing is usable (observe marked the held ones DOWN too); a refused one does not."""
    held = Held(0.0, HOLD, frozenset({"s1"}))
    given = rows(row("s1", status=HANA, check_state=DISABLED), row("s2", status=L4OK),
                 row("s3", status=L4CON))  # fmt: skip
    step = look("b", given, held, 3.0, HOLD, RECHECK)
    assert step.commands == ["set server b/s1 health up", "disable health b/s2",
                             "set server b/s2 health up"]  # fmt: skip
    assert step.started == {"s2": "L4OK"} and step.held == Held(
        0.0, HOLD, frozenset({"s1", "s2"}), 1
    )


def test_servers_removed_or_put_in_maintenance_leave_the_panic() -> None:
    held = Held(0.0, HOLD, frozenset({"s1", "s2", "s3"}))
    given = rows(row("s1", op=UP), row("s2", admin_state=1, check_state=DISABLED))
    step = look("b", given, held, 3.0, HOLD, RECHECK)
    assert step.dropped == ("s2", "s3")
    assert step.commands == ["enable health b/s2"]  # (checked again once it leaves maint)
    assert step.held == Held(0.0, HOLD, frozenset({"s1"}))
    gone = look("b", {}, held, 3.0, HOLD, RECHECK)
    assert gone.held is None and gone.commands == []


def test_the_hold_ends_with_the_checks_enabled_again() -> None:
    held = Held(0.0, HOLD, frozenset({"s1", "s2"}))
    given = rows(row("s1", op=UP, check_state=DISABLED), row("other", op=UP))
    step = look("b", given, held, HOLD, HOLD, RECHECK)
    assert step.commands == ["enable health b/s1"] and step.ended == ("s1",)
    assert step.held is None


STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 1 a 127.0.0.1 0 0 1 1 4 12 2 0 6 0 0 0 - 8080 - 0 0 - - 0
3 web 2 b 127.0.0.1 2 0 1 1 4 8 2 3 2 0 0 0 - 8081 - 0 0 - - 0
"""  # noqa: E501


def test_rows_are_parsed_by_the_header() -> None:
    got = servers_of(STATE, "web")
    assert read(got["a"]) == ("a", DOWN, 0, 1, L7TOUT, CHECKED)
    assert read(got["b"]) == ("b", UP, 0, 1, L4CON, DISABLED)
    assert servers_of(STATE, "other") == {}
    assert servers_of("Can't find backend.\n", "web") == {}  # (its service removed)
    with pytest.raises(UnexpectedAnswer):
        servers_of("No such backend.\n", "web")


def test_the_planner_leaves_a_held_check_disabled() -> None:
    """Else the next apply (or the sweep finding the drift) re-enables it mid-panic; one
    not held (a previous synapse's panic, an add cut short) is enabled as before."""
    web = service("web", [server("127.0.0.1", 8080, "a")], server_options="check inter 1000")
    backend = render([web]).backends["web"]
    name, server_name = backend.name, next(iter(backend.servers))
    current = {server_name: RunningServer(name, server_name, 1, "127.0.0.1", 8080,
                                          check_state=CHECK_CONFIGURED)}  # fmt: skip
    for held, wanted in ((frozenset(), True), (frozenset({f"{name}/{server_name}"}), False)):
        ops: list = []
        backend_ops(backend, current, Capabilities((2, 6, 12), held_checks=held), ops, [])
        assert any(isinstance(op, EnableHealth) for op in ops) is wanted, (held, ops)


def test_a_zone_backend_takes_its_service_s_panic_settings() -> None:
    from synapse.haproxy.panic_watch import PanicSettings, _ByBackend

    web = service("web", [], health_check={"panic_hold_ms": 3000})
    off = service("off", [], health_check={"panic": False})
    settings_of = _ByBackend(lambda: [web, off])
    assert settings_of("web") == settings_of("web_zone_az1") == PanicSettings(True, 3.0)
    assert settings_of("off") == PanicSettings(False, 10.0)
    assert settings_of("other") is None


def test_a_usable_server_not_held_ends_the_hold_early() -> None:
    """A held server may be hung (accepts, never answers: each of its requests a 504): once
    another answers its check (or one is added) the held ones go back to their checks."""
    held = Held(0.0, HOLD, frozenset({"s1", "s2"}))
    given = rows(row("s1", op=UP, check_state=DISABLED), row("s2", op=UP, check_state=DISABLED),
                 row("s3", op=UP, status=L4OK))  # fmt: skip
    step = look("b", given, held, 3.0, HOLD, RECHECK)
    assert step.held is None and step.ended == ("s1", "s2")
    assert step.commands == ["enable health b/s1", "enable health b/s2",
                             "set server b/s1 health down",
                             "set server b/s2 health down"]  # fmt: skip
    held_up = rows(row("s1", op=UP, check_state=DISABLED), row("s2", op=UP, check_state=DISABLED))
    calm = look("b", held_up, held, 3.0, HOLD, RECHECK)
    assert calm.held == held and calm.look_again == 3.0 + RECHECK  # (looked at while held)
    # one just added is UP before its first check (status 1, INI): not yet, it may be dead
    added = look("b", held_up | rows(row("s3", op=UP, status=1)), held, 3.0, HOLD, RECHECK)
    assert added.held == held and added.commands == []
