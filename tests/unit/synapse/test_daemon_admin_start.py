"""The daemon's admin server is started before the reconciler runs: whoever sees HAProxy
answer (a readiness probe, a benchmark) can ask synapse, which answers 503 until HAProxy
runs the desired state."""

from __future__ import annotations

from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon


def daemon_recording_order() -> tuple[SynapseDaemon, list[str]]:
    """A daemon without services or HAProxy recording what starts in which order."""
    config = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    daemon = SynapseDaemon(config)
    order: list[str] = []

    async def start_admin() -> None:
        order.append("admin")

    async def run_reconciler() -> None:
        order.append("reconciler")

    daemon._start_admin = start_admin  # type: ignore[method-assign]
    daemon._run_reconciler = run_reconciler  # type: ignore[method-assign]
    return daemon, order


async def test_the_admin_server_is_started_before_the_reconciler_runs() -> None:
    daemon, order = daemon_recording_order()
    await daemon.start()
    try:
        assert order == ["admin"]  # started (awaited) by start() itself
    finally:
        await daemon.stop()
    assert daemon.admin is None
