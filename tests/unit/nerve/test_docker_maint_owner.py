"""Docker mode: a container's maintenance flag belongs to that container (its id). The same
container started again keeps it; a destroyed one loses it (its destroy event, or not found
at a resync); a new container under the same name starts without it. (No dockerd: the real
ContainerWatch gets the engine's changes by hand, a fake engine answers the resync's
questions. With a private dockerd: tests/system/docker/test_nerve_docker.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker.errors  # here: urllib3 binds a socket at import (IPv6 probe)
import pytest
from nerve_fakes import Recorder

from nerve import docker_source
from nerve.docker_config import DockerModeConfig
from nerve.docker_source import DockerSource
from nerve.maintenance import MaintenanceFlag, MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.service import ADMIN, Service
from smartstack.docker_events import ContainerInfo, ContainerWatch, PortBinding
from smartstack.logs import _FIELDS as FIELDS

OLD, NEW, OTHER = "a1" * 32, "b2" * 32, "c3" * 32  # container ids
KEY = "web@app1:80"
FLAG = f"{KEY.replace('@', '%40').replace(':', '%3A')}.json"


def container(cid: str, name: str = "app1", running: bool = True) -> ContainerInfo:
    labels = {"smartstack.service": "web", "smartstack.port": "80", "smartstack.check": "none"}
    return ContainerInfo(id=cid, name=name, image="web:1", labels=labels, running=running,
                         health=None, started_at="2026-12-01T00:00:00Z", networks={},
                         ports={"80/tcp": (PortBinding("127.0.0.1", 32000),)})  # fmt: skip


class Engine:
    """The fake dockerd the resync's check asks: which containers exist."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing
        self.asked: list[str] = []
        self.api = self

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        self.asked.append(container_id)
        if container_id not in self.existing:
            raise docker.errors.NotFound(f"No such container: {container_id}")
        return {"Id": container_id}

    def close(self) -> None:
        pass


class Registries:
    async def release(self, reporter: Any) -> None:
        pass


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Engine:
    fake = Engine({OLD, NEW, OTHER})
    monkeypatch.setattr(docker, "DockerClient", lambda **_: fake)
    monkeypatch.setattr(ContainerWatch, "start", lambda self: None)  # changes come by hand

    def build(key: str, config: Any, *, store: MaintenanceStore, **_: Any) -> Service:
        return Service(key, [], [], Recorder(), maintenance=store, check_interval=60)

    monkeypatch.setattr(docker_source, "build_service", build)
    return fake


def source(store: MaintenanceStore) -> tuple[DockerSource, ContainerWatch]:
    cfg = DockerModeConfig.model_validate({"service_defaults": {"zk_hosts": ["z:1"],
                                                               "zk_path": "/s"}})  # fmt: skip
    made = DockerSource(cfg, instance_id="h", registries=Registries(),  # type: ignore[arg-type]
                        metrics=NerveMetrics(), store=store)  # fmt: skip
    made.start()
    assert made.watch is not None
    return made, made.watch


def in_maintenance(made: DockerSource) -> bool:
    return ADMIN in made.services[KEY].state.maintenance


def dropped(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r)[FIELDS] for r in caplog.records if r.getMessage() == "maintenance_dropped"]


async def until(condition: Any, what: str) -> None:
    for _ in range(200):  # 2 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(what)


async def test_a_restarted_container_keeps_its_maintenance_a_destroyed_one_loses_it(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve.maintenance")
    made, watch = source(MaintenanceStore(tmp_path))
    try:
        watch._apply_reset({OLD: container(OLD)})
        made.services[KEY].enter_maintenance("drain before docker stop")
        watch._apply_update(OLD, container(OLD, running=False))  # docker restart: it stops
        watch._apply_update(OLD, container(OLD))  # ... and runs again, the same container
        assert in_maintenance(made)
        watch._apply_update(OLD, container(OLD, running=False))  # docker stop
        assert (tmp_path / FLAG).exists() and dropped(caplog) == []  # stopped: still there
        watch._apply_update(OLD, None)  # docker rm: its destroy event
        assert not (tmp_path / FLAG).exists()
        assert dropped(caplog) == [{"service": KEY, "container": OLD[:12],
                                    "reason": "container removed",
                                    "ended": "drain before docker stop"}]  # fmt: skip
        watch._apply_update(NEW, container(NEW))  # docker run --name app1 (a new id)
        assert not in_maintenance(made)
    finally:
        await made.stop(withdraw=False)


async def test_a_new_container_under_the_name_does_not_inherit_the_maintenance(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Recreated while nerve did not see the old one go (down; a rolling redeploy): the
    flag names the old container."""
    caplog.set_level(logging.INFO, logger="nerve.maintenance")
    made, watch = source(MaintenanceStore(tmp_path))
    try:
        watch._apply_reset({OLD: container(OLD)})
        made.services[KEY].enter_maintenance("redeploy", duration=600)
    finally:
        await made.stop(withdraw=False)
    made, watch = source(MaintenanceStore(tmp_path))  # nerve started again
    try:
        watch._apply_reset({NEW: container(NEW)})
        assert not in_maintenance(made)
        assert not (tmp_path / FLAG).exists()
        assert [d["reason"] for d in dropped(caplog)] == ["container replaced"]
    finally:
        await made.stop(withdraw=False)


async def test_flags_of_containers_gone_while_nerve_was_down_go_at_the_start(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve.maintenance")
    files = {
        "db.json": {"reason": "disk swap"},  # a config file's service
        "web%40app2%3A80.json": {"reason": "stopped, not removed", "container": OTHER},
        FLAG: {"reason": "drain", "container": "d4" * 32},
    }  # removed meanwhile
    for name, flag in files.items():
        (tmp_path / name).write_text(json.dumps({"since": 1.0, **flag}))
    made, watch = source(MaintenanceStore(tmp_path))  # nerve started again
    try:
        watch._apply_reset({})  # its first listing: app2 stopped, app1 gone
        await until(lambda: not (tmp_path / FLAG).exists(), "the removed one's flag dropped")
        assert sorted(engine.asked) == sorted([OTHER, "d4" * 32])
        assert sorted(p.name for p in tmp_path.iterdir()) == ["db.json", "web%40app2%3A80.json"]
        assert [(d["service"], d["reason"]) for d in dropped(caplog)] == [
            (KEY, "container removed")
        ]
    finally:
        await made.stop(withdraw=False)


def test_an_older_or_unreadable_flag_of_a_container_s_service(tmp_path: Path) -> None:
    """A flag saved before nerve recorded containers is taken as the container's there now;
    an unreadable one cannot be told whose it was: it holds, as for any service."""
    (tmp_path / FLAG).write_text(json.dumps({"reason": "old nerve", "since": 1.0}))
    store = MaintenanceStore(tmp_path)
    store.bind(KEY, OLD)
    assert store.load(KEY) == MaintenanceFlag("old nerve", 1.0, None, OLD)
    assert json.loads((tmp_path / FLAG).read_text())["container"] == OLD
    assert store.containers() == {KEY: OLD}
    fresh = MaintenanceStore(tmp_path)
    fresh.bind(KEY, NEW)  # then recreated
    assert fresh.load(KEY) is None and not (tmp_path / FLAG).exists()
    (tmp_path / FLAG).write_text("{not json")
    broken = MaintenanceStore(tmp_path)
    broken.bind(KEY, NEW)
    flag = broken.load(KEY)
    assert isinstance(flag, MaintenanceFlag) and flag.unreadable
    assert broken.drop_container(NEW, "container removed") == []  # (no id in it to match)


def test_a_destroyed_container_that_had_left_the_map_is_reported_gone() -> None:
    """A stopped container leaves the watch's map at the next resync; its destroy event
    comes later and still reaches on_gone."""
    gone: list[str] = []

    class InlineLoop:
        def call_soon_threadsafe(self, fn: Any, *args: Any) -> None:
            fn(*args)

    watch = ContainerWatch("unix:///d.sock", InlineLoop(), lambda _: None,  # type: ignore[arg-type]
                           on_gone=gone.append)  # fmt: skip
    watch._apply_reset({OLD: container(OLD)})
    watch._apply_reset({})  # stopped: not listed
    attributes = {"name": "app1", "smartstack.service": "web"}
    watch._handle(None, {"Type": "container", "Action": "destroy", "id": OLD,
                         "Actor": {"ID": OLD, "Attributes": attributes}})  # fmt: skip
    assert gone == [OLD]


def test_joining_keeps_the_container() -> None:
    flag = MaintenanceFlag("drain", 1.0, None, OLD)
    assert flag.joined("deploy", 5.0) == replace(flag, reason="drain | deploy")
