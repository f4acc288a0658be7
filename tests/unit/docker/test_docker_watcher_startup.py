"""synapse's docker watcher at start: no report before every engine answered once (or the
startup hold passed), so a slower engine's containers are not dropped from the state file's
list by a report that only knows the first engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from synapse_testlib import Collector, metrics, sample, service_config

import synapse.watchers.docker as docker_watcher
from smartstack.docker_events import ContainerInfo, PortBinding
from smartstack.record import Registration
from synapse.model import Found
from synapse.reload_diff import Holds, ServiceState
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext


class FakeWatch:
    """A ContainerWatch without its thread: the test says when an engine answers."""

    made: list[FakeWatch] = []

    def __init__(self, base_url: str, loop: Any, on_change: Any, **_: Any) -> None:
        self.base_url, self.on_change = base_url, on_change
        self.containers: dict[str, ContainerInfo] = {}
        self.connected, self.last_error, self.resyncs = False, None, 0
        FakeWatch.made.append(self)

    def start(self) -> None:
        pass

    async def stop(self, timeout: float = 5.0) -> None:
        pass

    def resync(self, name: str, port: int) -> None:
        info = ContainerInfo(
            id=name * 8, name=name, image="shop/web:1", labels={}, running=True, health=None,
            started_at="t0", networks={}, ports={"80/tcp": (PortBinding("0.0.0.0", port),)},
        )  # fmt: skip
        self.containers, self.connected = {info.id: info}, True
        self.resyncs += 1
        self.on_change(dict(self.containers))


@pytest.fixture
def watches(monkeypatch: pytest.MonkeyPatch) -> list[FakeWatch]:
    FakeWatch.made = []
    monkeypatch.setattr(docker_watcher, "ContainerWatch", FakeWatch)
    return FakeWatch.made


async def started(sink: Collector, watches: list[FakeWatch], hold: float, monkeypatch) -> Any:
    monkeypatch.setattr(docker_watcher, "STARTUP_HOLD", hold, raising=False)
    engines = ["unix:///a.sock", {"name": "b", "host": "10.0.0.2", "port": 2375}]
    discovery = {"method": "docker", "container_port": 80, "servers": engines}
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics())
    watcher = create_watcher("web", service_config(discovery), sink, ctx)
    await watcher.start()
    while len(watches) < 2:
        await asyncio.sleep(0)
    return watcher


async def test_no_report_before_every_engine_answered(
    watches: list[FakeWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Collector()
    watcher = await started(sink, watches, 60.0, monkeypatch)
    try:
        watches[0].resync("a", 32001)
        await asyncio.sleep(0.05)
        assert sink.reports == []  # engine b has not answered: its containers would drop
        watches[1].resync("b", 32002)
        assert sink.hosts() == ["10.0.0.2:32002", "127.0.0.1:32001"]
    finally:
        await watcher.stop()


async def test_an_engine_silent_past_the_hold_is_left_out_until_it_answers(
    watches: list[FakeWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and every report is complete (not partial): a partial one makes the reconciler
    hold all the service had for state_file_ttl, and a SIGHUP's new watcher would wait for
    an engine that may never answer (a decommissioned host still in the config)."""
    sink = Collector()
    watcher = await started(sink, watches, 0.05, monkeypatch)
    try:
        watches[0].resync("a", 32001)
        await sink.wait_hosts(["127.0.0.1:32001"], timeout=5)
        assert [r.partial for r in sink.reports] == [False] * len(sink.reports)
        watches[1].resync("b", 32002)
        await sink.wait_hosts(["10.0.0.2:32002", "127.0.0.1:32001"], timeout=5)
        assert [r.partial for r in sink.reports] == [False] * len(sink.reports)
    finally:
        await watcher.stop()


async def test_an_answering_engines_removed_container_is_not_kept(
    watches: list[FakeWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restart with engine b silent: a's container web2, in the state file, was removed
    meanwhile. The reconciler's Holds (with that state file) must not keep web2: its IP
    may serve another service's container by now."""
    sink = Collector()
    watcher = await started(sink, watches, 0.05, monkeypatch)
    try:
        watches[0].resync("a", 32001)
        report = await sink.wait(lambda r: r.found, timeout=5)
    finally:
        await watcher.stop()
    web2 = Found(Registration(host="127.0.0.1", port=32009, name="127.0.0.1_web2"),
                 "state_file:127.0.0.1_web2")  # fmt: skip
    service = ServiceState(watcher.config, watcher.config, report=report)
    holds = Holds(lambda _name: None, lambda: 86400.0)
    try:
        hosts = [f"{f.registration.host}:{f.registration.port}"
                 for f in holds.found(service, lambda _name: [web2])]  # fmt: skip
    finally:
        Holds.end(service)
    assert hosts == ["127.0.0.1:32001"]


async def test_each_engine_has_its_connected_gauge(
    watches: list[FakeWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Collector()
    watcher = await started(sink, watches, 60.0, monkeypatch)

    def gauges() -> list[float]:
        return [sample(watcher.metrics.registry, "synapse_docker_engine_connected",
                       service="web", engine=w.base_url) for w in watches]  # fmt: skip

    try:
        watches[0].resync("a", 32001)
        watcher._connection_changed()  # (the real watch calls on_connection at each resync)
        assert gauges() == [1.0, 0.0]
        assert watcher.connected  # the service has a live source: any engine
        watches[1].resync("b", 32002)
        watcher._connection_changed()
        assert gauges() == [1.0, 1.0]
    finally:
        await watcher.stop()
