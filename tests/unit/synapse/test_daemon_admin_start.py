"""The daemon starts its admin server after the first hand-over (bounded by
startup_wait + ADMIN_START_CAP): aiohttp's imports then cost a cold start nothing
before HAProxy serves."""

from __future__ import annotations

import asyncio

import pytest

import synapse.daemon
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def daemon_recording_admin_starts() -> tuple[SynapseDaemon, list[bool]]:
    """A daemon without services or HAProxy; each admin start records whether the
    reconciler's first round had run by then."""
    config = SynapseConfig.model_validate(
        {"services": {}, "admin": {"port": None}, "startup_wait": 0}
    )
    daemon = SynapseDaemon(config)
    starts: list[bool] = []

    async def start_admin() -> None:
        assert daemon.reconciler is not None
        starts.append(daemon.reconciler.first_round.is_set())

    daemon._start_admin = start_admin  # type: ignore[method-assign]
    return daemon, starts


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_admin_server_starts_once_the_first_round_has_run() -> None:
    daemon, starts = daemon_recording_admin_starts()
    await daemon.start()
    try:
        await wait_for(lambda: starts)
        assert starts == [True]
        assert daemon.reconciler is not None and daemon.reconciler.applies == 0  # no HAProxy
    finally:
        await daemon.stop()


async def test_without_a_first_round_the_admin_server_starts_after_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(synapse.daemon, "ADMIN_START_CAP", 0.1)
    daemon, starts = daemon_recording_admin_starts()

    async def never_rounds() -> None:
        await asyncio.Event().wait()

    daemon._run_reconciler = never_rounds  # type: ignore[method-assign]
    await daemon.start()
    try:
        await asyncio.sleep(0.05)
        assert starts == []  # still waiting for the first round
        await wait_for(lambda: starts)
        assert starts == [False]  # the cap, not the round, started it
    finally:
        await daemon.stop()


async def test_stopping_before_the_admin_server_started_cancels_its_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(synapse.daemon, "ADMIN_START_CAP", 0.2)
    daemon, starts = daemon_recording_admin_starts()

    async def never_rounds() -> None:
        await asyncio.Event().wait()

    daemon._run_reconciler = never_rounds  # type: ignore[method-assign]
    await daemon.start()
    await daemon.stop()
    await asyncio.sleep(0.3)
    assert starts == []
    assert daemon.admin is None
