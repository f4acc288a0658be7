"""The harness's parsers of HAProxy's runtime answers (no HAProxy needed)."""

from __future__ import annotations

from testbed.haproxy import (
    parse_servers_state,
    parse_show_proc,
)


def test_parsers() -> None:
    state = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n"
        "3 web 1 7 10.0.0.1 2 1\n"
    )
    assert parse_servers_state(state) == [
        {
            "be_id": 3,
            "be_name": "web",
            "srv_id": 1,
            "srv_name": "7",
            "srv_addr": "10.0.0.1",
            "srv_op_state": 2,
            "srv_admin_state": 1,
        }
    ]
    proc = "#<PID> <type>\n10 master 1\n# workers\n12 worker 0\n# old workers\n11 worker 1\n"
    assert parse_show_proc(proc)["workers"] == [12]
    assert parse_show_proc(proc)["old_workers"] == [11]
