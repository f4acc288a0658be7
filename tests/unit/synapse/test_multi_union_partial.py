"""A ``multi`` union whose child has not answered yet drops none of the servers the service
had: its report is partial (Report.partial), and the reconciler keeps what the service had
(its previous list, the state file's after a restart) beside it until every child answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from synapse_testlib import Collector, metrics, service_config

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.model import Found, Report
from synapse.reload_diff import ServiceState, reported_found
from synapse.selection import select_servers
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext

ZK = {"method": "zookeeper", "hosts": ["h:1"], "path": "/web"}
UNION = {"method": "multi", "resolver": {"method": "union"},
         "watchers": {"a": ZK, "b": ZK | {"hosts": ["h:2"]}}}  # fmt: skip


def found(*hosts: str) -> tuple[Found, ...]:
    return tuple(Found(Registration(host=h, port=80, name="n"), f"zk:{h}") for h in hosts)


def hosts(items) -> list[str]:
    return sorted(f.registration.host for f in items)


def partial(*names: str) -> Report:
    return Report("web", "multi", found(*names), partial=True)


def test_a_partial_report_keeps_the_servers_the_service_had_until_a_complete_one() -> None:
    cfg = service_config(ZK)
    state = ServiceState(cfg, cfg, selection=select_servers(cfg, found("a1", "b1"), None))
    state.report = partial("a1", "a2")  # a2 added at once, b1 (maybe the silent one's) kept
    assert hosts(reported_found(state, lambda _: None)) == ["a1", "a1", "a2", "b1"]
    state.selection = select_servers(cfg, reported_found(state, lambda _: None), None)
    state.report = partial("a1")  # a2 came after: it goes at once; b1 still kept
    assert hosts(reported_found(state, lambda _: None)) == ["a1", "a1", "b1"]
    state.report = report("web", "a1")  # every child answered: what they said, only
    assert hosts(reported_found(state, lambda _: None)) == ["a1"] and state.held is None


def test_a_first_partial_report_after_a_restart_keeps_the_state_files_servers() -> None:
    cfg = service_config(ZK)
    state = ServiceState(cfg, cfg, report=partial("a1"))  # no selection yet
    assert hosts(reported_found(state, lambda name: found("a1", "b1"))) == ["a1", "a1", "b1"]


class Child(SimpleNamespace):
    async def stop(self) -> None:
        return None


async def test_the_union_is_partial_until_every_child_answered() -> None:
    sink = Collector()
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics())
    watcher = create_watcher("web", service_config(UNION), sink, ctx)
    watcher.children = {"a": Child(connected=True), "b": Child(connected=False)}
    watcher._sink("a")(Report("web", "zookeeper", found("a1")))
    assert sink.last is not None and sink.last.partial and hosts(sink.last.found) == ["a1"]
    watcher._sink("b")(Report("web", "zookeeper", ()))  # b answers: nothing there
    assert len(sink.reports) == 2  # the same list, sent again: now complete
    assert not sink.last.partial and hosts(sink.last.found) == ["a1"]


async def test_a_union_restart_keeps_the_silent_registrys_servers_of_the_state_file(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.json"
    now = int(time.time())
    state.write_text(json.dumps({"web": {
        f"n_{h}:80": {"timestamp": now, "host": h, "port": 80, "name": "n"} for h in ("a1", "b1")
    }}))  # fmt: skip
    cfg = SynapseConfig.model_validate({
        "services": {"web": {"discovery": UNION, "haproxy": {"port": 3300}}},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true",
                    "state_file_path": str(state)},
        "startup_wait": 0.3,
    })  # fmt: skip
    applier = FakeApplier()
    rec = make_reconciler(cfg, applier)
    async with running(rec, applier, partial("a1", "a2")):  # A answered, B's registry down
        assert applier.hosts("web") == ["a1", "a2", "b1"]
        rec.report(Report("web", "multi", found("a1", "a2")))  # B answered: nothing there
        await eventually(lambda: applier.hosts("web") == ["a1", "a2"], what="b1 gone")
