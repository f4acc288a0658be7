"""docker_services at start: the daemon waits for Docker's first answer (bounded by
``startup_wait``) before it builds the reconciler; a SIGHUP in that wait, after the file
was read, is a reload once synapse has started (not dropped as "still starting")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon
from synapse.docker_services import DockerServiceSource


async def test_a_sighup_while_docker_services_waits_for_docker_reloads_once_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DockerServiceSource, "start", lambda self: None)  # dockerd never answers
    config = SynapseConfig.model_validate({
        "services": {}, "admin": {"port": None}, "startup_wait": 0.5,
        "docker_services": {"enabled": True, "engine": f"unix://{tmp_path}/no-dockerd.sock"},
    })  # fmt: skip
    daemon = SynapseDaemon(config, "synapse.yaml")
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
