"""synapse's docker watcher remembers which containers it logged as unusable (each once):
only while they exist, not every id it ever saw (a container churn grew it without bound)."""

from __future__ import annotations

import asyncio

import pytest
from synapse_testlib import Collector, sample
from test_docker_watcher_startup import FakeWatch, started, watches

from smartstack.docker_events import ContainerInfo

__all__ = ["watches"]  # (the fixture, used by name)


def unpublished(cid: str) -> ContainerInfo:
    """Port 80 not published and no network: no address, refused."""
    return ContainerInfo(id=cid, name=f"c{cid[:6]}", image="shop/web:1", labels={},
                         running=True, health=None, started_at="t0", networks={},
                         ports={})  # fmt: skip


async def test_a_removed_bad_container_is_forgotten(
    watches: list[FakeWatch], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Collector()
    watcher = await started(sink, watches, 0.0, monkeypatch)
    try:
        await asyncio.sleep(0.01)
        watches[0].resync("a", 32001)
        watches[1].resync("b", 32002)
        keep = unpublished("k" * 64)
        for i in range(100):  # bad containers started and removed, one stays
            cid = f"{i:04x}" * 16
            watches[0].containers = {keep.id: keep, cid: unpublished(cid)}
            watches[0].on_change({})
            watches[0].containers = {keep.id: keep}
            watches[0].on_change({})
        assert watcher._reported_bad == {keep.id}
        bad = sample(watcher.metrics.registry, "synapse_bad_records_total", service="web",
                     method="docker")  # fmt: skip
        assert bad == 101  # each distinct container once, the one that stays too
    finally:
        await watcher.stop()
