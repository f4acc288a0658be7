"""The runtime client's pure parts: answer parsers, op outcomes, splitting a batch's answers."""

from __future__ import annotations

import dataclasses

import pytest

from synapse.haproxy.answers import (
    parse_servers_state,
    parse_show_backend,
    parse_show_proc,
    parse_state_labels,
    parse_version,
)
from synapse.haproxy.ops import AddServer, DelServer, SetAddr, SetState, SetWeight
from synapse.haproxy.sockets import UnexpectedAnswer, split_answers
from synapse.model import server_name

STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
3 web 5 a 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 1 - 19001 - 0 0 - - 0
3 web 7 1 127.0.0.1 0 5 3 3 0 1 0 0 8 0 0 1 - 19002 - 0 0 - - 0
"""  # noqa: E501


PROC = """#<PID>          <type>          <reloads>       <uptime>        <version>
11813           master          2 [failed: 1]   0d00h02m54s     2.6.12-1+deb12u4
# workers
12470           worker          1               0d00h02m39s     2.6.12-1+deb12u4
# old workers
12001           worker          2               0d00h03m00s     2.6.12-1+deb12u4
# programs
"""


def test_parse_servers_state():
    a, b = parse_servers_state(STATE)
    assert (a.backend, a.name, a.id, a.addr, a.port, a.weight) == (
        "web",
        "a",
        5,
        "127.0.0.1",
        19001,
        1,
    )
    assert not a.in_maint and a.label == "UP"
    assert b.name == "1"  # a numeric server name stays a name
    assert b.forced_maint and b.in_maint and b.label == "MAINT" and b.weight == 3
    with pytest.raises(UnexpectedAnswer):
        parse_servers_state("Unknown command.\n")


def test_parse_show_proc_backend_and_version():
    proc = parse_show_proc(PROC)
    assert (proc.master_pid, proc.reloads, proc.failed_reloads) == (11813, 2, 1)
    assert proc.workers == (12470,) and proc.old_workers == (12001,)
    assert parse_show_backend("# name\nweb\nstats\n\n") == ["web", "stats"]
    assert parse_version("2.6.12-1+deb12u4") == (2, 6, 12)
    with pytest.raises(UnexpectedAnswer):
        parse_version("dev")


def test_op_answers():
    assert SetState("b", "s", "maint").succeeded("\n")
    assert not SetState("b", "s", "maint").succeeded("No such server.\n\n")
    assert AddServer("b", "s", "1.2.3.4:80").succeeded("New server registered.\n\n")
    assert not AddServer("b", "s", "1.2.3.4:80").succeeded("'cookie' option is not accepted\n")
    assert SetAddr("b", "s", "1.2.3.4", 80).succeeded("IP changed from 'a' to 'b' by 'x'\n")
    assert DelServer("b", "s").succeeded("Server deleted.\n")
    assert SetWeight("b", "s", 3).command == "set weight b/s 3"


def test_split_answers_cuts_at_each_prompt_and_keeps_the_unfinished_rest():
    stream = b"\n> No such server.\n\n> \n> 1\n# be_id\n3 web 4 a\n\n> partial"
    answers, used = split_answers(stream, 10)
    assert answers == ["", "No such server.\n", "", "1\n# be_id\n3 web 4 a\n"]
    assert stream[used:] == b"partial"
    assert split_answers(stream, 2) == (
        ["", "No such server.\n"],
        len(b"\n> No such server.\n\n> "),
    )
    # scan_from: the first bytes were searched already; an answer still starts at 0.
    assert split_answers(b"abc\n> ", 1, scan_from=2) == (["abc"], 6)
    assert split_answers(b"no prompt yet", 3) == ([], 0)


def test_a_state_dump_is_checked_by_its_header_and_an_error_is_refused():
    from synapse.haproxy.answers import check_servers_state

    dump = "1\n# be_id be_name srv_id srv_name srv_addr\n3 web 1 a 10.0.0.1 2 0 1 1 5\n"
    check_servers_state(dump)  # no error
    for refused in ("Unknown command. Please enter one of the following commands only:\n", ""):
        with pytest.raises(UnexpectedAnswer):
            check_servers_state(refused)


def test_parsed_state_shares_repeated_strings_and_ports() -> None:
    """Memory: 20,000 rows name ~1,000 backends and few ports; one object each, not a copy
    per row (and a server's name is the same string as in its spec: smartstack.strings)."""
    rows = "1\n" + "".join(
        f"3 web {sid} s{sid}_10.0.0.1:8080 10.0.0.1 2 0 1 1 5 1 0 2 0 0 0 0 - 8080 -\n"
        for sid in (1, 2)
    )
    first, second = parse_servers_state(rows)
    assert first.backend is second.backend and first.addr is second.addr
    assert first.port is second.port == 8080
    assert first.name is server_name("10.0.0.1", 8080, "s1")


def test_rows_equal_to_known_servers_give_those_objects() -> None:
    """A re-read of an unchanged backend builds no server: the view's own objects come back
    (its comparison then finds them identical); a row that differs in any field is new."""
    a, b = parse_servers_state(STATE)
    again = parse_servers_state(STATE, {"a": a, "1": b})
    assert again[0] is a and again[1] is b
    changed = STATE.replace("127.0.0.1 0 5 3 3", "127.0.0.1 0 5 4 3")  # b's weight
    moved = STATE.replace(" 19001 ", " 19009 ")  # a's port
    other = {"a": dataclasses.replace(a, backend="api"), "1": b}  # same name, other backend
    assert parse_servers_state(changed, {"a": a, "1": b})[1] is not b
    assert parse_servers_state(changed, {"a": a, "1": b})[1].weight == 4
    assert parse_servers_state(moved, {"a": a})[0] == dataclasses.replace(a, port=19009)
    assert parse_servers_state(STATE, other)[0] is not other["a"]


def test_a_header_in_another_column_order_is_followed() -> None:
    """The header names the columns (kept per header line, not parsed per answer)."""
    header = "# be_name be_id srv_name srv_id srv_addr srv_op_state srv_admin_state " \
        "srv_uweight srv_iweight srv_port srv_check_state"  # fmt: skip
    for _ in range(2):
        (server,) = parse_servers_state(f"1\n{header}\nweb 3 a 5 10.0.0.9 2 0 7 1 8080 2\n")
        assert (server.backend, server.name, server.id, server.port, server.weight) == (
            "web", "a", 5, 8080, 7,
        )  # fmt: skip
        assert server.check_disabled
    with pytest.raises(UnexpectedAnswer):
        parse_servers_state("1\n# be_name srv_name\nweb a\n")


# Rows of HAProxy 2.6.12 (srv_check_state, column 14): a `check` line (6: configured and
# enabled), no check (0), a checked line `disabled` (14: paused in maint), an added server
# before its `enable health` (2); a check in progress (+1) on an enabled (7) and on a
# disabled one (3).
CHECKS = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
2 web 1 a 127.0.0.1 0 0 1 1 0 8 2 0 6 0 0 0 - 1 - 0 0 - - 0
2 web 2 b 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 2 - 0 0 - - 0
2 web 3 c 127.0.0.1 0 5 1 1 0 1 0 0 14 0 0 0 - 3 - 0 0 - - 0
2 web 4 d 127.0.0.1 0 1 1 1 0 1 0 0 2 0 0 0 - 4 - 0 0 - - 0
2 web 5 e 127.0.0.1 2 0 1 1 0 1 0 0 7 0 0 0 - 5 - 0 0 - - 0
2 web 6 f 127.0.0.1 2 0 1 1 0 1 0 0 3 0 0 0 - 6 - 0 0 - - 0
"""  # noqa: E501


def test_checks_configured_but_disabled_are_read_from_the_check_state() -> None:
    """An `add server ... check` whose `enable health` never came: HAProxy shows CONFIGURED
    without ENABLED, and the planner enables them before the server serves."""
    servers = parse_servers_state(CHECKS)
    assert {s.name: s.check_disabled for s in servers} == {
        "a": False, "b": False, "c": False, "d": True, "e": False, "f": True,
    }  # fmt: skip
    # A known server whose checks changed is a new object, not the known one.
    d = servers[3]
    enabled = CHECKS.replace(" 0 0 2 0 0 0 - 4 ", " 0 0 6 0 0 0 - 4 ")
    after = parse_servers_state(enabled, {"d": d})[3]
    assert after is not d and not after.check_disabled
    assert parse_servers_state(CHECKS, {"d": d})[3] is d


def test_a_check_in_progress_or_paused_is_no_change() -> None:
    """srv_check_state's INPROGRESS (1) and PAUSED (8) come and go with every check and
    every maint: a known server whose only difference is one of them stays the known
    object (a sweep catching a check in progress replaced the backend and planned it, 11
    plans in 30 s of one quiet slow-checked backend on HAProxy 2.6); CONFIGURED and
    ENABLED are compared (0, 2 and 6 differ)."""
    a, _, c, d, e, f = parse_servers_state(CHECKS)
    assert (a.check_state, c.check_state, d.check_state, e.check_state, f.check_state) == (
        6, 6, 2, 6, 2,
    )  # fmt: skip
    in_progress = CHECKS.replace(" 0 8 2 0 6 0 0 0 - 1 ", " 0 8 2 0 7 0 0 0 - 1 ")
    assert parse_servers_state(in_progress, {"a": a})[0] is a
    assert parse_servers_state(in_progress)[0] == a
    paused = CHECKS.replace(" 0 0 2 0 0 0 - 4 ", " 0 0 10 0 0 0 - 4 ")
    assert parse_servers_state(paused, {"d": d})[3] is d
    unchecked = CHECKS.replace(" 0 8 2 0 6 0 0 0 - 1 ", " 0 8 2 0 0 0 0 0 - 1 ")
    assert CHECKS not in (in_progress, paused, unchecked)  # (each replace took)
    assert parse_servers_state(unchecked, {"a": a})[0] != a


def test_a_looks_parse_gives_the_labels_of_the_full_parse() -> None:
    """``parse_state_labels`` (a look's read: labels only, no RunningServer per row) says
    what ``parse_servers_state`` and ``label`` say, header order followed, sorted by name."""
    rows = [f"3 web {i} s{i} 127.0.0.1 {op} {admin} 1 1 0 1 0 2 6 0 0 1 - 1900{i} - 0 0 - - 0"
            for i, (op, admin) in enumerate([(2, 0), (0, 0), (2, 1), (2, 8), (1, 0), (3, 0),
                                             (0, 32), (2, 2)])]  # fmt: skip
    text = "\n".join([*STATE.splitlines()[:2], *reversed(rows)]) + "\n"
    full = {s.name: s.label for s in parse_servers_state(text)}
    assert set(full.values()) == {"UP", "DOWN", "MAINT", "DRAIN", "STARTING", "NOLB"}
    assert parse_state_labels(text, "web") == full and list(full) != sorted(full)
    assert list(parse_state_labels(text, "web")) == sorted(full)
    header = "# be_name srv_name srv_admin_state srv_op_state"
    assert parse_state_labels(f"1\n{header}\nweb a 1 2\nweb b 0 0\n", "web") == {
        "a": "MAINT", "b": "DOWN",
    }  # fmt: skip
    with pytest.raises(UnexpectedAnswer):
        parse_state_labels(text, "api")  # another backend's rows
    with pytest.raises(UnexpectedAnswer):
        parse_state_labels("1\n# be_name srv_name\nweb a\n", "web")
    with pytest.raises(UnexpectedAnswer):
        parse_state_labels("Unknown command.\n", "web")
