"""ChangeGate.expect: a ZooKeeper event holds background work back before its report."""

from __future__ import annotations

import asyncio

from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from synapse_testlib import Collector, metrics, service_config

import synapse.change_gate as change_gate
from synapse.change_gate import ChangeGate
from synapse.watchers.base import WatcherContext
from synapse.watchers.zookeeper import ZooKeeperWatcher


async def test_an_expected_change_holds_the_gate_through_its_round() -> None:
    gate = ChangeGate()
    gate.expect()
    assert gate.busy
    step = asyncio.create_task(gate.turn())
    await asyncio.sleep(0.005)
    gate.change()  # its report
    gate.done()  # its round ended
    await asyncio.wait_for(step, 1)
    assert not gate.busy and gate.waits == 1


async def test_a_round_ending_before_the_expected_report_keeps_the_gate_busy() -> None:
    gate = ChangeGate()
    gate.change()  # an earlier change's round is running ...
    gate.expect()  # ... when an event names another one, still being read
    gate.done()
    assert gate.busy, "the expected change is still on its way"
    gate.change()
    gate.done()
    assert not gate.busy


async def test_an_expected_change_that_never_reports_frees_the_gate(monkeypatch) -> None:
    monkeypatch.setattr(change_gate, "EXPECT_S", 0.01)
    gate = ChangeGate()
    gate.expect()  # (its read found nothing new: no report)
    await asyncio.wait_for(gate.turn(1.0), 0.5)
    assert not gate.busy


async def test_the_expiry_leaves_a_reported_change_s_round_alone(monkeypatch) -> None:
    monkeypatch.setattr(change_gate, "EXPECT_S", 0.005)
    gate = ChangeGate()
    gate.expect()
    gate.change()  # the report came: the round holds the gate, not the expiry
    await asyncio.sleep(0.02)
    assert gate.busy
    gate.done()
    assert not gate.busy


async def test_a_zookeeper_event_says_a_change_is_coming() -> None:
    heard: list[str] = []
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics(),
                         change_coming=lambda: heard.append("coming"))  # fmt: skip
    cfg = service_config({"method": "zookeeper", "hosts": ["127.0.0.1:1"], "path": "/svc"})
    watcher = ZooKeeperWatcher("svc", cfg, Collector(), ctx)
    watcher._on_tree(WatchedEvent(EventType.CREATED, KeeperState.CONNECTED, "/svc/a_1"))
    assert heard == ["coming"] and "a_1" in watcher._created


async def test_the_daemon_expects_a_change_only_once_the_reconciler_runs() -> None:
    from types import SimpleNamespace

    from synapse.daemon import SynapseDaemon

    gate = ChangeGate()
    reconciler = SimpleNamespace(takes_changes=False, change_gate=gate)
    daemon = SimpleNamespace(reconciler=reconciler)
    SynapseDaemon._change_coming(daemon)  # type: ignore[arg-type]
    assert not gate.busy, "before the first hand-over the after-start sweep goes first"
    reconciler.takes_changes = True
    SynapseDaemon._change_coming(daemon)  # type: ignore[arg-type]
    assert gate.busy


async def test_one_report_does_not_settle_another_services_expected_change() -> None:
    gate = ChangeGate()
    gate.expect()  # service a's event: its data is being read
    gate.expect()  # service b's event, read in flight too
    gate.change()  # a's report
    gate.done()  # a's round ended
    assert gate.busy, "b's report is still on its way"
    gate.change()  # b's report
    gate.done()
    assert not gate.busy


def test_the_reconciler_takes_changes_once_started_and_not_while_backing_off() -> None:
    from types import SimpleNamespace

    from synapse.reconciler import Reconciler

    takes = Reconciler.takes_changes.fget
    assert not takes(SimpleNamespace(started=False, _backing_off=False))  # type: ignore[misc]
    assert not takes(SimpleNamespace(started=True, _backing_off=True))  # type: ignore[misc]
    assert takes(SimpleNamespace(started=True, _backing_off=False))  # type: ignore[misc]
