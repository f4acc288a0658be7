"""HAProxy's own output lines relayed by a managed HAProxy: levels, server-state notices
and an old worker's "Proxy X stopped" counted into summaries, health-check transitions
held back past the first of a window, everything else relayed at once."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import pytest

from synapse.haproxy import output, output_checks
from synapse.haproxy.output import NoticeSummary, OutputRelay, notice_kind, output_level

CLI_UP = (
    "[WARNING]  (14144) : CLI : Server svc97/svc97-0-g1_127.0.0.1:21000 is UP/READY "
    "(leaving forced maintenance)."
)
CLI_MAINT = (
    "[WARNING]  (14144) : CLI : Server svc1/a_127.0.0.1:21000 is going DOWN for maintenance."
)
MAINT = (
    "[WARNING]  (2272) : Server svc1/b is going DOWN for maintenance. 19 active and 0 backup "
    "servers left. 0 sessions active, 0 requeued, 0 remaining in queue."
)
ADDED = "[NOTICE]   (2272) : CLI : 'server svc3/c_127.0.0.1:21003' : New server registered."
CHECK_DOWN = (
    "[WARNING]  (14144) : Server svc1/a is DOWN, reason: Layer4 connection problem, "
    "check duration: 0ms. 2 active and 0 backup servers left."
)
CHECK_UP = (
    "[WARNING]  (14144) : Server svc1/a is UP, reason: Layer4 check passed, check duration: "
    "0ms. 3 active and 0 backup servers online. 0 sessions requeued, 0 total in queue."
)
NO_SERVER = "[ALERT]    (14144) : backend 'svc1' has no server available!"
STOPPED = "[WARNING]  (14144) : Proxy s{} stopped (cumulated conns: FE: 0, BE: 0)."


def test_state_changes_made_through_the_runtime_api_are_info_other_warnings_stay() -> None:
    # synapse's own runtime commands: one line per server change, not a warning each
    assert output_level(CLI_UP, stopping=False) == logging.INFO
    assert output_level(CLI_MAINT, stopping=False) == logging.INFO
    # what HAProxy finds by itself stays a warning, an alert an error
    assert output_level(CHECK_DOWN, stopping=False) == logging.WARNING
    assert output_level(NO_SERVER, stopping=False) == logging.ERROR
    assert output_level("[NOTICE]   (1) : New worker (2) forked", stopping=False) == logging.INFO


def test_while_stopping_every_line_is_info() -> None:
    assert output_level(NO_SERVER, stopping=True) == logging.INFO
    assert output_level(CHECK_DOWN, stopping=True) == logging.INFO


def test_server_state_notices_are_recognised_by_kind_and_nothing_else() -> None:
    assert notice_kind(CLI_UP) == "ready"
    assert notice_kind(CLI_MAINT) == "maint"
    assert notice_kind(MAINT) == "maint"
    assert notice_kind(ADDED) == "added"
    assert notice_kind("[WARNING]  (7) : Server be/s enters drain state. 1 active") == "drain"
    assert notice_kind("[WARNING]  (7) : Server be/s is UP (leaving forced drain).") == "ready"
    assert notice_kind("[NOTICE]   (7) : Server deleted.") == "deleted"
    # a backup server's notices say "Backup Server" (HAProxy's SRV_F_BACKUP prefix)
    backup = "[WARNING]  (7) : CLI : Backup Server be/s is going DOWN for maintenance."
    assert notice_kind(backup) == "maint"
    assert output_level(backup, stopping=False) == logging.INFO
    # a health check's verdict, a DNS failure, a server still DOWN, an alert, HAProxy's
    # own notices: not summarized
    for line in (
        CHECK_DOWN,
        "[WARNING]  (7) : Server be/s is going DOWN for maintenance (DNS timeout status).",
        "[WARNING]  (7) : Server be/s is DOWN (leaving forced maintenance).",
        NO_SERVER,
        "[NOTICE]   (1) : New worker (2) forked",
        "garbage",
    ):
        assert notice_kind(line) is None, line
    # an alert quoting a notice's words is still an alert
    assert notice_kind("[ALERT]    (7) : Server be/s is going DOWN for maintenance.") is None


def test_a_summary_counts_per_kind_with_a_few_samples_then_starts_anew() -> None:
    summary = NoticeSummary(samples=2)
    assert summary.take() is None
    assert summary.add("maint", "m1") is True
    assert summary.add("ready", "r1") is False
    assert summary.add("maint", "m2") is False
    assert summary.take() == {
        "notices": 3,
        "kinds": {"maint": 2, "ready": 1},
        "samples": ["m1", "r1"],
    }
    assert summary.take() is None
    assert summary.add("added", "a1") is True  # the next interval's first


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, dict]]:
    return [
        (r.getMessage(), r.levelno, r.smartstack_fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "synapse.haproxy.managed"
    ]


async def test_the_relay_summarizes_notices_and_relays_other_lines_at_once_in_order(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "SUMMARY_INTERVAL", 0.05)
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    tail: deque[str] = deque(maxlen=40)
    relay = OutputRelay(tail, lambda: False)
    # chunks end anywhere, even inside a multi-byte character
    data = "\n".join([CLI_MAINT, ADDED, CLI_UP, NO_SERVER, MAINT, "[NOTICE] é"]).encode()
    cut = data.index("é".encode()) + 1
    relay.data_received(data[:100])
    relay.data_received(data[100:cut])
    assert [name for name, _, _ in _events(caplog)] == ["haproxy_output_summary", "haproxy_output"]
    first, alert = _events(caplog)
    assert first[2]["kinds"] == {"added": 1, "maint": 1, "ready": 1}
    assert alert[1:] == (logging.ERROR, {"line": NO_SERVER})
    await asyncio.sleep(0.2)  # the timer summarizes what was counted since
    assert _events(caplog)[-1][2] == {
        "interval_s": 0.05,
        "notices": 1,
        "kinds": {"maint": 1},
        "samples": [MAINT],
    }
    relay.data_received(data[cut:] + b"\n" + CLI_UP.encode())  # the last line not ended
    relay.connection_lost(None)  # its end: the rest is relayed, the count summarized
    assert relay.done.done()
    assert [e[2].get("line") or e[2]["kinds"] for e in _events(caplog)[3:]] == [
        "[NOTICE] é",
        {"ready": 1},
    ]
    assert list(tail) == [CLI_MAINT, ADDED, CLI_UP, NO_SERVER, MAINT, "[NOTICE] é", CLI_UP]


async def test_a_line_that_never_ends_is_relayed_once_it_is_too_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    relay = OutputRelay(deque(maxlen=40), lambda: False)
    relay.data_received(b"x" * output.MAX_LINE)
    assert not _events(caplog)  # not ended, not too long yet
    relay.data_received(b"yz")
    [(name, _, fields)] = _events(caplog)
    assert name == "haproxy_output" and fields["line"] == "x" * output.MAX_LINE + "yz"


async def test_the_relay_holds_back_flapping_and_summarizes_a_reload(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_checks, "CHECK_WINDOW", 0.2)
    monkeypatch.setattr(output, "SUMMARY_INTERVAL", 0.05)
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    tail: deque[str] = deque(maxlen=1000)
    relay = OutputRelay(tail, lambda: False)
    # an old worker ends: one line per proxy, one summary for them all
    relay.data_received("".join(STOPPED.format(i) + "\n" for i in range(400)).encode())
    await asyncio.sleep(0.1)
    [(name, level, fields)] = _events(caplog)
    assert (name, level) == ("haproxy_output_summary", logging.INFO)
    assert fields["kinds"] == {"proxy_stopped": 400}
    caplog.clear()
    # a server flapping: DOWN (and its backend's alert) relayed at once, UP too, then held
    lines = [CHECK_DOWN, NO_SERVER, CHECK_UP] * 2 + [CHECK_DOWN, NO_SERVER]
    relay.data_received("".join(x + "\n" for x in lines).encode())
    assert [(f["line"], lv) for _, lv, f in _events(caplog)] == [
        (CHECK_DOWN, logging.WARNING),
        (NO_SERVER, logging.ERROR),
        (CHECK_UP, logging.WARNING),
    ]
    await asyncio.sleep(0.4)  # the window's summary, then the current state: DOWN
    (_, _, summary), (name, level, last) = _events(caplog)[3:]
    assert summary["interval_s"] == 0.2 and summary["flapping"] == 2
    assert summary["kinds"] == {"check_down": 2, "check_up": 1, "no_server": 2}
    assert (name, level, last["line"]) == ("haproxy_output", logging.WARNING, CHECK_DOWN)
    assert last["held_s"] >= 0.1
    assert len(tail) == 408  # every line is kept for an exit's diagnosis


async def test_held_back_transitions_are_summarized_when_haproxy_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    relay = OutputRelay(deque(maxlen=40), lambda: True)
    relay.data_received("".join(x + "\n" for x in [CHECK_DOWN, CHECK_UP, CHECK_DOWN]).encode())
    relay.connection_lost(None)
    names = [(n, lv) for n, lv, _ in _events(caplog)]
    assert names[2:] == [
        ("haproxy_output_summary", logging.INFO),
        ("haproxy_output", logging.INFO),  # stopping: info
    ]


async def test_a_held_outage_is_relayed_at_its_level_once_it_settles_without_another_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_checks, "CHECK_WINDOW", 10.0)  # no summary in this test
    monkeypatch.setattr(output_checks, "SETTLE", 0.1, raising=False)
    monkeypatch.setattr(output, "SUMMARY_INTERVAL", 0.05)
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    relay = OutputRelay(deque(maxlen=40), lambda: False)
    # review s27 A: a bounce, then the server really goes down
    relay.data_received("".join(x + "\n" for x in [CHECK_DOWN, NO_SERVER, CHECK_UP]).encode())
    relay.data_received("".join(x + "\n" for x in [CHECK_DOWN, NO_SERVER]).encode())
    assert len(_events(caplog)) == 3
    await asyncio.sleep(0.3)  # settled: relayed by the timer, no further line needed
    [down, alert] = [(lv, f["line"]) for _, lv, f in _events(caplog)[3:]]
    assert down == (logging.WARNING, CHECK_DOWN) and alert == (logging.ERROR, NO_SERVER)
    caplog.clear()
    # review s27 C: held DOWN, then synapse puts the server in maintenance and deletes it
    relay.data_received("".join(x + "\n" for x in [CHECK_UP, CHECK_DOWN]).encode())
    relay.data_received(
        f"{MAINT.replace('svc1/b', 'svc1/a')}\n[NOTICE]   (7) : Server deleted.\n".encode()
    )
    await asyncio.sleep(0.3)
    assert [f.get("line") or f["kinds"] for _, _, f in _events(caplog)] == [
        {"deleted": 1, "maint": 1}
    ]
    relay.connection_lost(None)
    assert [n for n, _, _ in _events(caplog)][1:] == ["haproxy_output_summary"]  # the count
