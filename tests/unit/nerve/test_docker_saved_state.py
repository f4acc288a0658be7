"""Docker mode: a nerve restarted while dockerd is down builds the Services of the containers
its previous run registered from ``state_dir`` (nerve.docker_saved), before any listing; the
first listing reconciles them. And the engine's connection shows in ``nerve_docker_connected``.
(No dockerd: the watch's thread is not started, its changes come by hand. With a private
dockerd stopped under live-restore: tests/system/docker/test_nerve_docker_restart.py.)"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from nerve_fakes import Recorder

from nerve import docker_source
from nerve.docker_config import DockerModeConfig
from nerve.docker_saved import FILE, SavedContainers
from nerve.docker_source import DockerSource
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.service import Service
from smartstack.docker_events import ContainerInfo, ContainerWatch, PortBinding
from smartstack.logs import _FIELDS as FIELDS

APP1, APP2 = "a1" * 32, "b2" * 32
KEY1, KEY2 = "web@app1:80", "web@app2:80"


def container(cid: str, name: str, port: int) -> ContainerInfo:
    labels = {"smartstack.service": "web", "smartstack.port": "80", "smartstack.check": "none"}
    return ContainerInfo(id=cid, name=name, image="web:1", labels=labels, running=True,
                         health=None, started_at="2026-12-01T00:00:00Z", networks={"n": "10.9.0.2"},
                         ports={"80/tcp": (PortBinding("127.0.0.1", port),)})  # fmt: skip


class Registries:
    async def release(self, reporter: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ContainerWatch, "start", lambda self: None)  # dockerd: silent

    def build(key: str, config: Any, *, store: MaintenanceStore, **_: Any) -> Service:
        return Service(key, [], [], Recorder(), maintenance=store, check_interval=60)

    monkeypatch.setattr(docker_source, "build_service", build)


def source(directory: Path | None, url: str = "unix:///run/d.sock") -> DockerSource:
    cfg = DockerModeConfig.model_validate({"url": url, "service_defaults": {
        "zk_hosts": ["z:1"], "zk_path": "/s"}})  # fmt: skip
    made = DockerSource(cfg, instance_id="h", registries=Registries(),  # type: ignore[arg-type]
                        metrics=NerveMetrics(), store=MaintenanceStore(directory))  # fmt: skip
    made.start()
    return made


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [vars(r)[FIELDS] for r in caplog.records if r.getMessage() == name]


async def test_a_restarted_nerve_serves_the_saved_containers_until_the_first_listing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve.docker")
    first = source(tmp_path)
    assert first.watch is not None
    first.watch._apply_reset({APP1: container(APP1, "app1", 32001),
                              APP2: container(APP2, "app2", 32002)})  # fmt: skip
    await first.stop(withdraw=False)  # a crash (SIGKILL): nothing withdrawn

    second = source(tmp_path)  # started again while dockerd is down: no listing yet
    try:
        assert sorted(second.services) == [KEY1, KEY2]
        address = second.wanted[KEY1].config
        assert (address.host, address.port) == ("127.0.0.1", 32001)
        assert second.status()["restored"] is True
        assert events(caplog, "docker_state_restored") == [
            {"engine": "unix:///run/d.sock", "containers": 2, "services": 2}
        ]
        kept = second.services[KEY1]
        assert second.watch is not None
        second.watch._apply_reset({APP1: container(APP1, "app1", 32001)})  # app2 gone meanwhile
        assert second.services == {KEY1: kept}  # the same Service: not withdrawn and re-added
        assert second.status()["restored"] is False
        saved = json.loads((tmp_path / FILE).read_text())
        assert [c["id"] for c in saved["containers"]] == [APP1]
    finally:
        await second.stop(withdraw=False)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "malformed"),
        (json.dumps({"version": 99, "containers": []}), "version 99"),
        (
            json.dumps({"version": 1, "engine": "unix:///other.sock", "containers": []}),
            "saved for engine",
        ),
        (
            json.dumps({"version": 1, "engine": "unix:///run/d.sock", "containers": [{"id": "x"}]}),
            "malformed",
        ),
    ],
)
async def test_a_file_that_cannot_be_used_is_ignored_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, reason: str
) -> None:
    (tmp_path / FILE).write_text(content)
    made = source(tmp_path)
    try:
        assert made.services == {}
        [ignored] = events(caplog, "docker_state_ignored")
        assert ignored["reason"].startswith(reason), ignored
    finally:
        await made.stop(withdraw=False)


async def test_the_connected_gauge_follows_the_engine() -> None:
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


def test_a_failed_write_is_said_once_per_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state").write_text("a file where state_dir should be")
    saved = SavedContainers(tmp_path / "state", "unix:///run/d.sock")
    saved.save([container(APP1, "app1", 32001)])
    saved.save([container(APP1, "app1", 32001), container(APP2, "app2", 32002)])
    [failed] = events(caplog, "docker_state_not_saved")
    assert failed["error"].startswith(("FileExistsError", "NotADirectoryError")), failed
