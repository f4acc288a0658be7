"""Watchers without a registry: base, dns and unsupported methods."""

from __future__ import annotations

import asyncio

from synapse_testlib import Collector, metrics, sample, service_config

from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext
from synapse.watchers.dns import DnsWatcher
from synapse.watchers.static import BaseWatcher, UnsupportedWatcher


def ctx() -> WatcherContext:
    return WatcherContext(loop=asyncio.get_running_loop(), metrics=metrics())


async def test_base_reports_an_empty_discovery_once() -> None:
    sink = Collector()
    watcher = create_watcher("b", service_config({"method": "base"}), sink, ctx())
    assert isinstance(watcher, BaseWatcher)
    await watcher.start()
    report = await sink.wait(lambda r: True)
    assert report.found == () and report.method == "base"
    await watcher.stop()


async def test_unsupported_method_reports_empty_and_says_why() -> None:
    sink = Collector()
    cfg = service_config({"method": "ec2tag"}, default_servers=[{"host": "h", "port": 1}])
    watcher = create_watcher("e", cfg, sink, ctx())
    assert isinstance(watcher, UnsupportedWatcher)
    await watcher.start()
    await sink.wait(lambda r: r.found == ())
    status = watcher.status()
    assert status["method"] == "ec2tag" and "not supported" in status["error"]
    await watcher.stop()


async def test_dns_resolves_names_and_skips_unusable_entries() -> None:
    sink = Collector()
    cfg = service_config(
        {"method": "dns", "check_interval": 0.1,
         "servers": [{"name": "loop", "host": "localhost", "port": 8080},
                     "127.0.0.2:8081",
                     "no-port.invalid",
                     "does-not-exist.invalid:80"]}
    )  # fmt: skip
    watcher = create_watcher("d", cfg, sink, ctx())
    assert isinstance(watcher, DnsWatcher)
    await watcher.start()
    try:
        report = await sink.wait(lambda r: "127.0.0.2:8081" in (sink.hosts() or []))
        hosts = sink.hosts() or []
        assert "127.0.0.1:8080" in hosts
        assert all(not h.startswith("does-not-exist") for h in hosts)
        names = {f.registration.name for f in report.found}
        assert {"loop", "127.0.0.2"} <= names
        bad = sample(watcher.metrics.registry, "synapse_bad_records_total", service="d",
                     method="dns")  # fmt: skip
        assert bad == 1  # the entry without a port, once
    finally:
        await watcher.stop()


class _CrashesOnce(BaseWatcher):
    """A watcher with a bug that fires once (say, an unexpected exception from a client)."""

    runs = 0
    closes = 0

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise KeyError("unexpected")
        await super().run()

    async def close(self) -> None:
        self.closes += 1


async def test_a_crashed_watcher_is_started_again(monkeypatch) -> None:
    """A watcher bug must not freeze its service until synapse restarts."""
    monkeypatch.setattr("synapse.watchers.base.RESTART_BASE", 0.01)
    sink = Collector()
    watcher = _CrashesOnce("c", service_config({"method": "base"}), sink, ctx())
    await watcher.start()
    await sink.wait(lambda r: True)
    assert watcher.runs == 2 and watcher.closes == 1
    assert watcher.status()["restarts"] == 1
    await watcher.stop()


class _CallCancelledUnderIt(_CrashesOnce):
    """Its first run meets a call cancelled under it (a gRPC channel closed by another
    caller's failover): a CancelledError that is not the watcher's own stop."""

    async def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            raise asyncio.CancelledError
        await BaseWatcher.run(self)


async def test_a_watcher_whose_call_was_cancelled_under_it_is_started_again(monkeypatch) -> None:
    """Before, the stray CancelledError ended the watcher's task for good: its service
    frozen on its last list, without a log line, until synapse restarted."""
    monkeypatch.setattr("synapse.watchers.base.RESTART_BASE", 0.01)
    sink = Collector()
    watcher = _CallCancelledUnderIt("c", service_config({"method": "base"}), sink, ctx())
    await watcher.start()
    await asyncio.wait_for(sink.wait(lambda r: True), 5)
    assert watcher.runs == 2 and watcher.status()["restarts"] == 1
    await watcher.stop()
    assert watcher._task is None
