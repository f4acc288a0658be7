"""The daemon starts its admin server at once, without waiting for the first hand-over:
/health and /status answer while a slow start waits for its services."""

from __future__ import annotations

import asyncio

from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def daemon_recording_admin_starts() -> tuple[SynapseDaemon, list[int]]:
    """A daemon without services or HAProxy whose reconciler never rounds; each admin
    start records how many applies had run by then."""
    config = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    daemon = SynapseDaemon(config)
    starts: list[int] = []

    async def start_admin() -> None:
        assert daemon.reconciler is not None
        starts.append(daemon.reconciler.applies)

    async def never_rounds() -> None:
        await asyncio.Event().wait()

    daemon._start_admin = start_admin  # type: ignore[method-assign]
    daemon._run_reconciler = never_rounds  # type: ignore[method-assign]
    return daemon, starts


async def test_the_admin_server_starts_without_waiting_for_the_first_round() -> None:
    daemon, starts = daemon_recording_admin_starts()
    await daemon.start()
    try:
        for _ in range(100):
            if starts:
                break
            await asyncio.sleep(0.01)
        assert starts == [0]  # started while no round had run
    finally:
        await daemon.stop()


async def test_stopping_at_once_leaves_no_admin_server() -> None:
    daemon, _ = daemon_recording_admin_starts()
    await daemon.start()
    await daemon.stop()
    assert daemon.admin is None and daemon._admin_task is None
