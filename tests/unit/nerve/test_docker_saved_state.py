"""Docker mode across a restart of nerve while dockerd is down: nothing is registered from what
a previous run knew until dockerd's first listing confirms the container (a container removed
meanwhile may have left its address to another service's container, and a tcp check cannot
tell them apart). The containers file an older nerve saved in ``state_dir`` is removed, never
used; none is written. And the engine's connection shows in ``nerve_docker_connected``.
(No dockerd: the watch's thread is not started, its changes come by hand.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from nerve_fakes import Recorder

from nerve import docker_source
from nerve.docker_config import DockerModeConfig
from nerve.docker_source import OLD_STATE_FILE, DockerSource
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.service import Service
from smartstack.docker_events import ContainerInfo, ContainerWatch, PortBinding

APP1, API2 = "a1" * 32, "b2" * 32
KEY1 = "web@app1:80"
ENGINE = "unix:///run/d.sock"


def container(cid: str, name: str, service: str = "web") -> ContainerInfo:
    labels = {"smartstack.service": service, "smartstack.port": "80", "smartstack.check": "none"}
    return ContainerInfo(id=cid, name=name, image=f"{service}:1", labels=labels, running=True,
                         health=None, started_at="2026-12-01T00:00:00Z",
                         networks={"n": "172.31.77.2"},
                         ports={"80/tcp": (PortBinding("127.0.0.1", 32001),)})  # fmt: skip


def old_file(info: ContainerInfo) -> str:
    """docker-containers.state as nerve 2b84de3 wrote it (web@app1 serving at 172.31.77.2)."""
    saved = {"id": info.id, "name": info.name, "image": info.image, "labels": info.labels,
             "health": info.health, "started_at": info.started_at, "networks": info.networks,
             "ports": {"80/tcp": [["127.0.0.1", 32001]]}, "stop_signal": None,
             "stop_timeout": None}  # fmt: skip
    return json.dumps({"version": 1, "engine": ENGINE, "containers": [saved]})


class Registries:
    async def release(self, reporter: Any) -> None:
        pass


@pytest.fixture
def reporters(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    monkeypatch.setattr(ContainerWatch, "start", lambda self: None)  # dockerd: silent
    made: list[Recorder] = []

    def build(key: str, config: Any, *, store: MaintenanceStore, **_: Any) -> Service:
        made.append(Recorder())  # no checks: "register" at once, as a passing tcp check would
        return Service(key, [], [], made[-1], maintenance=store, check_interval=60)

    monkeypatch.setattr(docker_source, "build_service", build)
    return made


def source(directory: Path | None) -> DockerSource:
    cfg = DockerModeConfig.model_validate({"url": ENGINE, "service_defaults": {
        "zk_hosts": ["z:1"], "zk_path": "/s"}})  # fmt: skip
    made = DockerSource(cfg, instance_id="h", registries=Registries(),  # type: ignore[arg-type]
                        metrics=NerveMetrics(), store=MaintenanceStore(directory))  # fmt: skip
    made.start()
    return made


async def test_a_nerve_started_while_dockerd_is_down_registers_nothing_of_the_previous_run(
    tmp_path: Path, reporters: list[Recorder]
) -> None:
    """The reviewer's ipreuse case: web's app1 was removed while nerve was down and api2 took
    its address; the old file still names web@app1 there. Nothing may be registered for web
    until dockerd answers, and then only what dockerd lists."""
    (tmp_path / OLD_STATE_FILE).write_text(old_file(container(APP1, "app1")))
    made = source(tmp_path)
    try:
        await asyncio.sleep(0.2)  # a Service would have decided by now (no checks: at once)
        assert made.services == {}
        assert [r.decisions for r in reporters] == []
        assert not (tmp_path / OLD_STATE_FILE).exists()  # a later start cannot revive it
        assert made.watch is not None
        made.watch._apply_reset({API2: container(API2, "api2", service="api")})  # dockerd back
        assert sorted(made.services) == ["api@api2:80"]  # never web@app1
    finally:
        await made.stop(withdraw=False)


async def test_the_first_listing_registers_what_runs_and_nothing_is_saved(
    tmp_path: Path, reporters: list[Recorder]
) -> None:
    made = source(tmp_path)
    try:
        assert made.watch is not None
        made.watch._apply_reset({APP1: container(APP1, "app1")})
        assert sorted(made.services) == [KEY1]
        await asyncio.sleep(0.1)
        assert [r.decisions[:1] for r in reporters] == [[True]]
    finally:
        await made.stop(withdraw=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no containers file, clean stop


async def test_the_connected_gauge_follows_the_engine(reporters: list[Recorder]) -> None:
    made = source(None)

    def gauge() -> float | None:
        return made.metrics.registry.get_sample_value("nerve_docker_connected")

    try:
        assert made.watch is not None
        assert gauge() == 0.0  # not answered yet
        made.watch._apply_reset({})
        assert gauge() == 1.0
        made.watch._set_connected(False, "ConnectionError: gone")
        assert gauge() == 0.0
    finally:
        await made.stop(withdraw=False)
