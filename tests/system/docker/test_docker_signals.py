"""Signals a container survives (private dockerd): it must not stay withdrawn for good."""

from __future__ import annotations

import asyncio

import pytest
from dockertestlib import Collector, docker_service, published_port, watcher_context

from smartstack import docker_signals
from synapse.watchers.docker import DockerWatcher

# The container ignores TERM (ignored on entry: its own trap cannot take it back), as an app
# that traps it and runs on, or a PID 1 without a handler.
IGNORES_TERM = ["sh", "-c", "trap '' TERM; exec /bin/serve"]


async def test_quit_and_a_survived_term_do_not_withdraw_for_good(
    dockerd, docker_client, container_factory, monkeypatch: pytest.MonkeyPatch
):
    """QUIT (a JVM's thread dump) withdraws nothing; TERM to a container that runs on
    withdraws it until its stop timeout plus the margin (and the floor) has passed (here
    1 + 1 s instead of max(10 + 10 s, 300 s)), then the next resync (`check_interval`
    1.5 s) serves it again."""
    monkeypatch.setattr(docker_signals, "STOP_TIMEOUT_S", 1)
    monkeypatch.setattr(docker_signals, "STOP_MARGIN_S", 1.0)
    monkeypatch.setattr(docker_signals, "STOP_GRACE_MIN_S", 0.0)
    a = container_factory("sq-a", labels={"app": "sq"})
    b = container_factory("sq-b", labels={"app": "sq"}, command=IGNORES_TERM)
    sink = Collector()
    discovery = {"servers": [dockerd.base_url], "container_port": 80,
                 "label_selector": {"app": "sq"}, "check_interval": 1.5}  # fmt: skip
    watcher = DockerWatcher("web", docker_service(**discovery), sink, watcher_context())
    await watcher.start()
    try:
        both = sorted(f"127.0.0.1:{published_port(c)}" for c in (a, b))
        await sink.wait_addresses(both)
        docker_client.api.kill(a.id, signal="SIGQUIT")  # sh as PID 1 runs on
        await asyncio.sleep(1.0)
        assert sink.addresses() == both
        docker_client.api.kill(b.id, signal="SIGTERM")
        await sink.wait_addresses([f"127.0.0.1:{published_port(a)}"], timeout=5)
        await sink.wait_addresses(both, timeout=10)
        for container in (a, b):
            container.reload()
            assert container.status == "running"
    finally:
        await watcher.stop()
