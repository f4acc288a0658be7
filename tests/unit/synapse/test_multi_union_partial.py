"""A ``multi`` union whose child has not answered yet drops none of the servers the service
had: its report is partial (Report.partial), and the reconciler keeps what the service had
(its previous list, the state file's after a restart) beside it until every child answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running
from synapse_testlib import Collector, metrics, service_config

from smartstack.record import Registration
from synapse.config import SynapseConfig
from synapse.model import Found, Report
from synapse.reload_diff import Holds, ServiceState
from synapse.selection import HELD_ORIGIN, select_servers
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


def holds(bound: float = 60.0, due: Callable[[str], None] = lambda _: None) -> Holds:
    return Holds(due, lambda: bound)


async def test_a_partial_report_keeps_the_servers_no_answered_child_listed() -> None:
    cfg = service_config(ZK)
    state = ServiceState(cfg, cfg, selection=select_servers(cfg, found("a1", "b1"), None))
    kept = holds()
    state.report = partial("a1", "a2")  # a2 added at once, b1 (maybe the silent one's) kept
    assert hosts(kept.found(state, lambda _: None)) == ["a1", "a2", "b1"]
    state.selection = select_servers(cfg, kept.found(state, lambda _: None), None)
    state.report = partial("a1")  # a2 came after: it goes at once; b1 still kept
    assert hosts(kept.found(state, lambda _: None)) == ["a1", "b1"]
    state.report = partial()  # a1, kept at first, was listed by a child that answered: goes
    assert hosts(kept.found(state, lambda _: None)) == ["b1"]
    state.report = report("web", "a1")  # every child answered: what they said, only
    assert hosts(kept.found(state, lambda _: None)) == ["a1"] and state.held is None


async def test_a_first_partial_report_after_a_restart_keeps_the_state_files_servers() -> None:
    cfg = service_config(ZK)
    state = ServiceState(cfg, cfg, report=partial("a1"))  # no selection yet
    kept = holds().found(state, lambda name: found("a1", "b1"))
    assert [(f.registration.host, f.origin) for f in kept] == [
        ("a1", "zk:a1"),
        ("b1", f"{HELD_ORIGIN}zk:b1"),
    ]


async def test_a_hold_ends_after_its_bound_though_the_silent_child_never_answers() -> None:
    cfg = service_config(ZK)
    state = ServiceState(cfg, cfg, selection=select_servers(cfg, found("a1", "b1"), None))
    due: list[str] = []
    kept = holds(0.05, due.append)
    state.report = partial("a1")
    assert hosts(kept.found(state, lambda _: None)) == ["a1", "b1"]
    await eventually(lambda: due == ["web"], timeout=5, what="the hold's end")
    assert hosts(kept.found(state, lambda _: None)) == ["a1"]
    state.selection = select_servers(cfg, found("a1"), None)
    assert hosts(kept.found(state, lambda _: None)) == ["a1"], "not held anew"


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


def union_config(tmp_path: Path, ttl: float, stamps: dict[str, int]) -> SynapseConfig:
    """A union service whose state file has ``stamps`` (host -> last seen)."""
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"web": {
        f"n_{h}:80": {"timestamp": t, "host": h, "port": 80, "name": "n"} for h, t in stamps.items()
    }}))  # fmt: skip
    return SynapseConfig.model_validate({
        "services": {"web": {"discovery": UNION, "haproxy": {"port": 3300}}},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true",
                    "state_file_path": str(state), "state_file_ttl": ttl},
        "startup_wait": 0.3,
    })  # fmt: skip


async def test_a_silent_child_keeps_no_server_beyond_state_file_ttl(tmp_path: Path) -> None:
    now = int(time.time())
    applier = FakeApplier()
    rec = make_reconciler(union_config(tmp_path, 1.5, dict.fromkeys(("a1", "a2", "b1"), now)),
                          applier)  # fmt: skip
    async with running(rec, applier, partial("a1", "a2")):  # B's registry down for good
        assert applier.hosts("web") == ["a1", "a2", "b1"]
        rec.report(partial("a1"))  # A deregistered a2: A answers for it, it goes now
        await eventually(lambda: applier.hosts("web") == ["a1", "b1"], 3, "a2 gone")
        rec.report(partial("a3"))  # (not empty: use_previous_backends would keep them all)
        await eventually(lambda: applier.hosts("web") == ["a3", "b1"], 3, "a1 gone")
        await eventually(lambda: applier.hosts("web") == ["a3"], 5, "b1 gone after the ttl")


async def test_a_server_kept_only_by_the_hold_is_not_stamped_as_seen(tmp_path: Path) -> None:
    now = int(time.time())
    stamps = {"a1": now - 500, "b1": now - 500}
    applier = FakeApplier()
    rec = make_reconciler(union_config(tmp_path, 1000, stamps), applier)

    def written() -> dict[str, int]:
        data = json.loads((tmp_path / "state.json").read_text())["web"]
        return {v["host"]: v["timestamp"] for v in data.values()}

    async with running(rec, applier, partial("a1")):
        assert applier.hosts("web") == ["a1", "b1"]
        await eventually(lambda: written()["a1"] >= now, 5, "the state file's write")
        assert written()["b1"] == now - 500  # (B never said it is there)
