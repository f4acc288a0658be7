"""A managed HAProxy's output relayed to synapse's log, against a real HAProxy 2.6: its
notices about server state changes made by runtime commands are summarized, every other
line (an alert) is relayed at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from haproxy_helpers import eventually, server, service

from synapse.haproxy import output, output_checks
from synapse.haproxy.runtime import RuntimeClient
from synapse.model import DesiredService
from testbed.process import free_port

SERVERS = 20


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


def _fields(record: logging.LogRecord) -> dict:
    return record.smartstack_fields  # type: ignore[attr-defined,no-any-return]


def _counted(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    summaries = _records(caplog, "haproxy_output_summary")
    return sum(_fields(r)["kinds"].get(kind, 0) for r in summaries)


async def _started(managed_factory, services) -> RuntimeClient:
    controller = managed_factory()
    await controller.start()
    await controller.apply(services, "t")
    return RuntimeClient(controller.settings.runtime_sockets[0])


async def _checked(managed_factory, backend) -> tuple[Any, DesiredService]:
    """A started managed controller serving ``backend`` alone (service and server named
    as it), checked every 100 ms, rise 1, fall 1."""
    checked = service(
        backend.name,
        [server("127.0.0.1", backend.port, backend.name)],
        port=free_port(),
        server_options="check inter 100 rise 1 fall 1",
        backend=["option httpchk GET /health"],
    )
    controller = managed_factory()
    await controller.start()
    await controller.apply([checked], "t")
    return controller, checked


async def test_a_burst_of_maint_and_ready_commands_is_summarized(
    managed_factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "SUMMARY_INTERVAL", 0.2)
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    servers = [server("127.0.0.1", free_port(), f"s{i}") for i in range(SERVERS)]
    runtime = await _started(managed_factory, [service("web", servers, port=free_port())])
    names = [s.name for s in servers]
    await runtime.ask([f"set server web/{name} state maint" for name in names])
    await runtime.ask([f"set server web/{name} state ready" for name in names])

    async def all_counted() -> bool:
        return _counted(caplog, "maint") >= SERVERS and _counted(caplog, "ready") >= SERVERS

    await eventually(all_counted, "summaries counting every maint and ready notice")
    summaries = _records(caplog, "haproxy_output_summary")
    assert len(summaries) < 2 * SERVERS / 4, "one summary per interval, not one per line"
    assert all(len(_fields(r)["samples"]) <= output.SAMPLES for r in summaries)
    assert any(
        f"web/{names[0]} is going DOWN for maintenance" in s
        for s in _fields(summaries[0])["samples"]
    )
    relayed = [_fields(r)["line"] for r in _records(caplog, "haproxy_output")]
    assert not [line for line in relayed if output.notice_kind(line)], relayed


async def test_an_alert_is_relayed_at_once_after_the_notices_before_it(
    managed_factory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "SUMMARY_INTERVAL", 600.0)  # no summary but the alert's
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    only = server("127.0.0.1", free_port(), "only")
    runtime = await _started(managed_factory, [service("solo", [only], port=free_port())])
    await runtime.ask([f"set server solo/{only.name} state maint"])  # its last server

    async def alerted() -> list[logging.LogRecord]:
        return [
            r
            for r in _records(caplog, "haproxy_output")
            if "has no server available" in _fields(r)["line"]
        ]

    (alert,) = await eventually(alerted, "HAProxy's alert relayed")
    assert alert.levelno == logging.ERROR
    # the maint notice before it was summarized just before it, not 600 s later
    events = [r for r in caplog.records if r.name == "synapse.haproxy.managed"]
    before = events[events.index(alert) - 1]
    assert before.getMessage() == "haproxy_output_summary"
    assert _fields(before)["kinds"] == {"maint": 1}


async def test_a_flapping_check_and_a_reload_are_counted_not_relayed_line_by_line(
    managed_factory,
    http_backend_factory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(output_checks, "CHECK_WINDOW", 60.0)  # no summary but at the end
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    flapper = http_backend_factory("flap")
    controller, checked = await _checked(managed_factory, flapper)
    for _ in range(8):  # ~8 transitions
        flapper.set_healthy(not flapper.healthy)
        await asyncio.sleep(0.4)
    flapper.set_healthy(True)
    await asyncio.sleep(0.4)
    # a reload (a service added): the old worker prints "Proxy X stopped" per proxy
    other = service("other", [server("127.0.0.1", free_port(), "o")], port=free_port())
    await controller.apply([checked, other], "t")

    async def old_worker_summarized() -> bool:
        return _counted(caplog, "proxy_stopped") >= 2  # (frontend and backend flap, ...)

    await eventually(old_worker_summarized, "the old worker's proxies counted")
    relayed = [_fields(r)["line"] for r in _records(caplog, "haproxy_output")]
    assert not [line for line in relayed if " stopped (cumulated conns" in line], relayed
    transitions = [line for line in relayed if output_checks.transition(line)]
    assert len(transitions) <= 3, transitions  # DOWN, UP, the backend's alert
    assert any("is DOWN, reason:" in line for line in transitions), relayed
    await controller.stop()  # HAProxy ends: the held-back transitions are summarized
    held = sum(_counted(caplog, k) for k in ("check_down", "check_up", "no_server"))
    assert held >= 3
    # the log's last word on the server is its current state (UP), relayed or brought up
    # to date at the summary
    about = [_fields(r)["line"] for r in _records(caplog, "haproxy_output")]
    assert "is UP, reason:" in [line for line in about if "Server flap/" in line][-1]


async def test_a_real_outage_after_a_bounce_is_relayed_once_it_settles(
    managed_factory,
    http_backend_factory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # review s27: DOWN, UP relayed; the server then really goes down: its DOWN and the
    # backend's alert held back, relayed (WARNING, ERROR) SETTLE s later, not at the window's end
    monkeypatch.setattr(output_checks, "CHECK_WINDOW", 60.0)
    monkeypatch.setattr(output_checks, "SETTLE", 1.0, raising=False)
    caplog.set_level(logging.INFO, "synapse.haproxy.managed")
    backend = http_backend_factory("out")
    controller, _ = await _checked(managed_factory, backend)
    for healthy in (False, True, False):  # a bounce, then down for good
        backend.set_healthy(healthy)
        await asyncio.sleep(0.5)

    async def outage_relayed() -> bool:
        return any("held_s" in _fields(r) for r in _records(caplog, "haproxy_output"))

    await eventually(outage_relayed, "the held-back outage relayed")
    await asyncio.sleep(0.3)
    about = [(r.levelno, _fields(r)) for r in _records(caplog, "haproxy_output")]
    held = [(level, f["line"]) for level, f in about if "held_s" in f]
    assert [level for level, _ in held] == [logging.WARNING, logging.ERROR], about
    assert "Server out/out" in held[0][1] and " is DOWN, reason:" in held[0][1]
    assert "has no server available!" in held[1][1]
    await controller.stop()
