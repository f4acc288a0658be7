"""docker_services: the containers' services saved for the next start (restored before Docker
answers; Docker's answers replace them; a file that does not fit is ignored, said)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from smartstack.docker_events import ContainerInfo, ContainerWatch
from smartstack.logs import _FIELDS as FIELDS
from synapse.config import SynapseConfig
from synapse.docker_services import DockerServiceSource
from synapse.docker_services_saved import saved_path
from synapse.edge_config import DockerServicesConfig

ENGINE = "unix:///run/d.sock"
CONFIG = DockerServicesConfig(enabled=True, engine=ENGINE)


def container(name: str, service: str, hosts: str) -> ContainerInfo:
    labels = {"smartstack.service": service, "smartstack.port": "80", "smartstack.hosts": hosts}
    return ContainerInfo(id=name * 4, name=name, image="web:1", labels=labels, running=True,
                         health=None, started_at="t0", networks={}, ports={})  # fmt: skip


def listing(*infos: ContainerInfo) -> dict[str, ContainerInfo]:
    return {info.id: info for info in infos}


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [vars(r)[FIELDS] for r in caplog.records if r.getMessage() == name]


class Source:
    """A DockerServiceSource without an engine: the test hands it the listings."""

    def __init__(self, path: Path | None, config: DockerServicesConfig = CONFIG) -> None:
        self.applied = 0
        self.source = DockerServiceSource(config, asyncio.get_running_loop(), self._apply, path)
        self.source.start = lambda: None  # type: ignore[method-assign]

    async def _apply(self) -> None:
        self.applied += 1

    async def settle(self) -> None:
        for task in (self.source._task, self.source._writing):
            if task is not None:
                await task


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="synapse.docker_services")


async def test_a_restart_starts_with_the_saved_services_and_the_same_answer_applies_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.docker-services.json"
    first = Source(path)
    await first.source.begin(0.5)
    first.source._changed(listing(container("w1", "web", "web.test")))
    await first.settle()
    assert first.applied == 0  # not live yet: the daemon merges at its start
    assert os.stat(path).st_mode & 0o777 == 0o600
    answered = dict(first.source.services)

    second = Source(path)
    started = time.monotonic()
    await second.source.begin(5.0)  # restored: no wait for Docker
    assert time.monotonic() - started < 1.0
    assert second.source.services == answered
    merged = second.source.merge(SynapseConfig.model_validate({"services": {}}))
    assert list(merged.services) == ["web"]
    assert events(caplog, "docker_services_restored")[-1]["services"] == ["web"]
    second.source.go_live()
    second.source._changed(listing(container("w1", "web", "web.test")))
    await second.settle()
    assert second.applied == 0  # Docker says what was saved: nothing to apply


async def test_docker_s_first_answer_replaces_the_saved_services(tmp_path: Path) -> None:
    path = tmp_path / "saved.json"
    first = Source(path)
    first.source._changed(listing(container("w1", "web", "web.test")))
    await first.settle()

    second = Source(path)
    await second.source.begin(0.5)
    second.source.merge(SynapseConfig.model_validate({"services": {}}))
    second.source.go_live()
    second.source._changed(listing(container("a1", "api", "api.test")))  # web gone meanwhile
    await second.settle()
    assert second.applied == 1
    assert list(second.source.services) == ["api"]
    assert list(json.loads(path.read_text())["blocks"]) == ["api"]


async def test_without_a_saved_file_the_start_waits_for_docker_s_first_answer(
    tmp_path: Path,
) -> None:
    waiting = Source(tmp_path / "none-yet.json")
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, waiting.source._changed, listing(container("w1", "web", "web.test")))
    await waiting.source.begin(5.0)
    assert list(waiting.source.services) == ["web"]

    silent = Source(None)  # no state file at all; dockerd never answers: bounded
    started = time.monotonic()
    await silent.source.begin(0.3)
    assert 0.25 < time.monotonic() - started < 2.0
    assert silent.source.services == {}


async def test_an_engine_that_cannot_be_reached_ends_the_wait_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real watch thread, whose first connection is refused: the file's own services
    # should not wait startup_wait for an engine that is not there.
    def refused(watch: ContainerWatch, periodic: bool = False) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(ContainerWatch, "_session", refused)
    source = DockerServiceSource(CONFIG, asyncio.get_running_loop(), _nothing, tmp_path / "s.json")
    started = time.monotonic()
    try:
        await source.begin(5.0)
        assert time.monotonic() - started < 2.0  # (before: the whole 5 s)
        assert source.services == {}
    finally:
        await source.stop()


async def _nothing() -> None:
    pass


async def test_a_change_between_the_merge_and_go_live_is_applied_then(tmp_path: Path) -> None:
    source = Source(tmp_path / "s.json")
    await source.source.begin(0.1)
    source.source.merge(SynapseConfig.model_validate({"services": {}}))
    source.source._changed(listing(container("w1", "web", "web.test")))
    await source.settle()
    assert source.applied == 0
    source.source.go_live()
    await source.settle()
    assert source.applied == 1


KEY = {"version": 1, "engine": ENGINE, "prefix": "smartstack.", "blocks": {}}
BAD_BLOCK = {"web": {"discovery": {"method": "nope"}}}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "malformed"),
        ("[]", "malformed"),
        (json.dumps({**KEY, "version": 2}), "version"),
        (json.dumps({**KEY, "engine": "tcp://other:2375"}), "engine"),
        (json.dumps({**KEY, "prefix": "app."}), "prefix"),
        (json.dumps({**KEY, "blocks": BAD_BLOCK}), "malformed"),
    ],
)
async def test_a_file_that_does_not_fit_is_ignored_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, reason: str
) -> None:
    path = tmp_path / "saved.json"
    path.write_text(text)
    source = Source(path)
    await source.source.begin(0.05)
    assert source.source.services == {}
    (ignored,) = events(caplog, "docker_services_saved_ignored")
    assert ignored["reason"].startswith(reason), ignored
    assert ignored["path"] == str(path)


async def test_a_failed_write_is_said_once_and_tried_again_at_the_next_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "saved.json"  # its directory is a file: every write fails
    source = Source(path)
    for hosts in ("a.test", "b.test"):
        source.source._changed(listing(container("w1", "web", hosts)))
        await source.settle()
    assert len(events(caplog, "docker_services_not_saved")) == 1
    blocker.unlink()
    source.source._changed(listing(container("w1", "web", "b.test")))  # the same services
    await source.settle()
    assert json.loads(path.read_text())["blocks"]["web"]["haproxy"]["routes"]["hosts"] == ["b.test"]


def test_the_file_sits_beside_the_state_file() -> None:
    managed = SynapseConfig.model_validate(
        {"haproxy": {"config_file_path": "/run/h/haproxy.cfg", "managed": {}}, "services": {}}
    )
    assert saved_path(managed) == Path("/run/h/haproxy.synapse-state.docker-services.json")
    assert saved_path(SynapseConfig.model_validate({"services": {}})) is None


async def test_answers_in_quick_succession_leave_the_last_one_in_the_file(tmp_path: Path) -> None:
    """Writes run in a thread, in order: an answer back to what the file held before a
    write under way is written again (not taken as already there)."""
    path = tmp_path / "saved.json"
    source = Source(path)
    source.source._changed(listing(container("w1", "web", "a.test")))
    await source.settle()
    source.source._changed(listing(container("w1", "web", "b.test")))
    source.source._changed(listing(container("w1", "web", "a.test")))
    await source.settle()
    assert json.loads(path.read_text())["blocks"]["web"]["haproxy"]["routes"]["hosts"] == ["a.test"]
