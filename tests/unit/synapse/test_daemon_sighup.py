"""SIGHUPs fold into a reload that has not read the file yet; stopping synapse cancels a
reload under way before anything stops (no watcher starts while synapse stops)."""

from __future__ import annotations

import asyncio

from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def daemon_with_slow_loads() -> tuple[SynapseDaemon, list[str], asyncio.Event]:
    config = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    daemon = SynapseDaemon(config, "synapse.yaml")
    daemon.reconciler = object()  # type: ignore[assignment]  # started
    seen: list[str] = []
    release = asyncio.Event()

    async def load(refused: object = None) -> tuple[SynapseConfig, list[str]]:
        seen.append("load")
        try:
            await release.wait()  # a validating child at work
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return config, []

    async def apply(new: SynapseConfig) -> None:
        seen.append("apply")

    daemon._load_config = load  # type: ignore[method-assign]
    daemon.apply_config = apply  # type: ignore[method-assign]
    return daemon, seen, release


async def test_sighups_while_a_reload_waits_are_folded_into_it() -> None:
    daemon, seen, release = daemon_with_slow_loads()
    daemon._on_sighup()
    await asyncio.sleep(0)  # the first reload reads the file
    for _ in range(50):
        daemon._on_sighup()  # one more reload waits; the others join it
    assert len(daemon._background) == 2
    release.set()
    while daemon._background:
        await asyncio.sleep(0)
    assert seen == ["load", "apply", "load", "apply"]
    daemon._on_sighup()  # a SIGHUP after those is a reload again
    assert len(daemon._background) == 1
    await daemon.stop()


async def test_stop_cancels_a_reload_under_way_before_stopping_the_rest() -> None:
    daemon, seen, _ = daemon_with_slow_loads()
    daemon._on_sighup()
    await asyncio.sleep(0)
    await daemon.stop()
    assert seen == ["load", "cancelled"] and not daemon._background


async def test_stop_waits_for_an_apply_holding_the_reload_lock() -> None:
    daemon, seen, _ = daemon_with_slow_loads()
    applied = asyncio.Event()

    async def docker_apply() -> None:  # as _apply_docker: under the lock
        async with daemon._reload_lock:
            await asyncio.sleep(0.01)
            seen.append("applied")
            applied.set()

    task = asyncio.create_task(docker_apply())
    await asyncio.sleep(0)
    await daemon.stop()
    assert applied.is_set() and not daemon._reload_lock.locked()
    await task
