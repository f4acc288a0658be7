"""A SIGHUP's replacement watcher, while it waits beside the running one, leaves the
service's gauges (synapse_watcher_connected, synapse_skipped_records) to the running one,
and its children too; once it takes over they are its values. Before, a replacement that
could not connect set synapse_watcher_connected 0 while the service was served, and kept
it 0 after a SIGHUP back dropped it."""

from __future__ import annotations

import asyncio

from synapse_testlib import metrics, sample, service_config

from synapse.config import ServiceConfig
from synapse.metrics import SynapseMetrics
from synapse.model import Sink
from synapse.watcher_swap import ServiceWatchers
from synapse.watchers.base import Watcher, WatcherContext


class QuietWatcher(Watcher):
    """A real watcher whose test says what it sees; ``child``: one made in ``run`` with its
    context, as a ``multi`` union makes its children."""

    method = "zookeeper"

    async def run(self) -> None:
        self.child = QuietWatcher(self.service, self.config, lambda _: None, self.ctx)
        await asyncio.Event().wait()


def zk(path: str) -> ServiceConfig:
    return service_config({"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": path})


async def test_a_waiting_replacement_leaves_the_service_gauges_to_the_running_watcher() -> None:
    m: SynapseMetrics = metrics()
    ctx = WatcherContext(loop=asyncio.get_running_loop(), metrics=m)
    made: list[QuietWatcher] = []

    def create(name: str, config: ServiceConfig, sink: Sink) -> Watcher:
        made.append(QuietWatcher(name, config, sink, ctx))
        return made[-1]

    def gauges() -> tuple[float, float]:
        registry = m.registry
        return (sample(registry, "synapse_watcher_connected", service="web"),
                sample(registry, "synapse_skipped_records", service="web"))  # fmt: skip

    watchers = ServiceWatchers(create, lambda _: None)
    await watchers.start("web", zk("/a"))
    [old] = made
    old.set_connected(True)
    old.report([], 2, 0.0)
    for config in (zk("/b"), zk("/a")):  # a SIGHUP to /b, then one back: /b's is dropped
        for dropped in watchers.drop({"web": config}):
            await dropped.stop()
        await watchers.follow({"web": config})
        await asyncio.sleep(0.01)  # (its run: the child)
        if config == zk("/b"):
            new = made[-1]
            new.set_connected(False, "connection refused")
            new.child.set_connected(False, "connection refused")
            new.report([], 0, 0.0, partial=True)
        assert gauges() == (1.0, 2.0) and watchers.active["web"] is old
    for dropped in watchers.drop({"web": zk("/c")}):
        await dropped.stop()
    await watchers.follow({"web": zk("/c")})
    new = made[-1]
    new.set_connected(True)
    new.report([], 5, 0.0, partial=True)  # (waits: not a complete list)
    new.set_connected(False, "session lost")
    assert gauges() == (1.0, 2.0)
    new.set_connected(True)
    new.report([], 3, 0.0)  # its first complete list: it takes over, with its values
    assert watchers.active["web"] is new and gauges() == (1.0, 3.0)
    new.set_connected(False, "session lost")
    old.set_connected(True)  # (the replaced one's last words count for nothing)
    assert gauges() == (0.0, 3.0)
    for _, step in watchers.stop_steps():
        await step()
