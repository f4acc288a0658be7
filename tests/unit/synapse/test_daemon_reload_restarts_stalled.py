"""A config reload (SIGHUP) tells the watcher swaps first, so a replacement watcher stalled on
a refused credential is started afresh by the apply that follows (kazoo never retries a refused
credential by itself); an apply for any other reason (a docker_services change) does not."""

from __future__ import annotations

from pathlib import Path

from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


async def test_a_config_reload_marks_the_swaps_before_applying(tmp_path: Path) -> None:
    config = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    daemon = SynapseDaemon(config, str(tmp_path / "synapse.yaml"))
    calls: list[str] = []

    async def load_config(refused: object = None) -> tuple[SynapseConfig, list[str]]:
        return config, []

    async def apply_config(new: SynapseConfig) -> None:
        calls.append("apply")

    daemon._load_config = load_config  # type: ignore[method-assign]
    daemon.apply_config = apply_config  # type: ignore[method-assign]
    original = daemon.service_watchers.sighup
    daemon.service_watchers.sighup = lambda: (calls.append("sighup"), original())[1]  # type: ignore[method-assign]
    assert await daemon.reload_config()
    assert calls == ["sighup", "apply"]
