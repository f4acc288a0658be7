"""docker_services at start: the daemon waits for Docker's first answer (bounded by
``startup_wait``) before it builds the reconciler, unless the engine cannot be reached; a
SIGHUP in that wait, after the file was read, is a reload once synapse has started (not
dropped as "still starting")."""

from __future__ import annotations

import asyncio
import time

import pytest

from smartstack.docker_events import ContainerWatch
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def docker_config(startup_wait: float) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": {}, "admin": {"port": None}, "startup_wait": startup_wait,
        "docker_services": {"enabled": True, "engine": "unix:///run/no-dockerd.sock"},
    })  # fmt: skip


async def test_an_engine_that_cannot_be_reached_does_not_delay_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(watch: ContainerWatch, periodic: bool = False) -> None:
        raise FileNotFoundError(2, "No such file or directory")  # dockerd down: no socket

    monkeypatch.setattr(ContainerWatch, "_session", refused)
    daemon = SynapseDaemon(docker_config(5.0), "synapse.yaml")
    started_at = time.monotonic()
    try:
        await asyncio.wait_for(daemon.start(), 10)
        assert daemon.reconciler is not None
        assert time.monotonic() - started_at < 2.0  # before: startup_wait (5 s) first
    finally:
        await daemon.stop()


async def test_a_sighup_while_docker_services_waits_for_docker_reloads_once_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def silent(watch: ContainerWatch, periodic: bool = False) -> None:
        watch._stop.wait(10)  # connected, never answers (until synapse stops)

    monkeypatch.setattr(ContainerWatch, "_session", silent)
    daemon = SynapseDaemon(docker_config(0.5), "synapse.yaml")
    reloads: list[float] = []

    async def reload_config() -> bool:
        reloads.append(time.monotonic())
        return True

    daemon.reload_config = reload_config  # type: ignore[method-assign]
    started_at = time.monotonic()
    start = asyncio.create_task(daemon.start())
    try:
        await asyncio.sleep(0.1)
        assert daemon.reconciler is None  # waiting for Docker (which never answers)
        daemon._on_sighup()
        await start
        assert time.monotonic() - started_at >= 0.45  # the wait, bounded by startup_wait
        for _ in range(100):
            if reloads:
                break
            await asyncio.sleep(0.01)
        assert len(reloads) == 1
    finally:
        await daemon.stop()
