"""Small pure pieces: the reporter's retry loop, maintenance flags, CLI parsing, keys."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pytest
from nerve_testlib import nerve_config, running_nerve, until, zk_service

from nerve.config import ServiceConfig
from nerve.control import describe, parse_duration
from nerve.maintenance import MaintenanceFlag, MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registries import reporter_identity
from nerve.reporters import base
from nerve.reporters.base import RegistryUnavailable, Reporter
from nerve.reporters.etcd import etcd_key
from smartstack.localservers.process import free_port
from smartstack.record import Registration

RECORD = Registration("10.0.0.5", 8080, "web-1")


class ScriptedReporter(Reporter):
    """A reporter whose registry is a flag: pure logic of the retry loop, no I/O."""

    kind = "scripted"

    def __init__(self, metrics: NerveMetrics) -> None:
        super().__init__("svc", RECORD, metrics)
        self.available = False
        self.attempts = 0

    def _attach(self) -> None:
        pass

    def _detach(self) -> None:
        pass

    async def _register(self) -> bool:
        self.attempts += 1
        if not self.available:
            raise RegistryUnavailable("down")
        self.registered, self.uncertain = True, False
        return True

    async def _withdraw(self) -> bool:
        self.registered, self.uncertain = False, False
        return True


async def test_failed_writes_are_retried_with_backoff_and_a_wake_cuts_it_short(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(base, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(base, "BACKOFF_MAX", 30.0)
    monkeypatch.setattr(base, "BACKOFF_JITTER", 0.0)
    metrics = NerveMetrics()
    reporter = ScriptedReporter(metrics)
    reporter.start()
    try:
        reporter.set_registered(True)
        await until(lambda: reporter.attempts >= 6, what="six attempts")
        # 0.05 * 2**n: the sixth wait is 1.6 s, the next 3.2 s: no tight loop.
        assert reporter.attempts <= 7
        assert reporter.last_error == "RegistryUnavailable: down"
        reporter.available = True
        woke = time.monotonic()
        reporter.wake()  # e.g. a new ZooKeeper session
        await until(lambda: reporter.registered, what="registration")
        assert time.monotonic() - woke < 1.5  # did not wait out the 3.2 s backoff
        await asyncio.wait_for(reporter.wait_in_sync(), 5)
        errors = metrics.registry.get_sample_value(
            "nerve_registry_errors_total", {"service": "svc", "registry": "scripted"}
        )
        assert errors is not None and errors >= 6
        assert reporter.writes == 1 and reporter.last_error is None
    finally:
        await reporter.stop(withdraw=True)
    assert not reporter.registered


def test_maintenance_store_round_trip_expiry_and_unreadable_files(tmp_path: Path) -> None:
    store = MaintenanceStore(tmp_path / "state")
    assert store.load("web/api") is None
    store.save("web/api", MaintenanceFlag("disk swap", 100.0, 200.0))
    files = list((tmp_path / "state").iterdir())
    assert [f.name for f in files] == ["web%2Fapi.json"]  # a safe file name
    fresh = MaintenanceStore(tmp_path / "state")  # as after a restart
    flag = fresh.load("web/api")
    assert flag == MaintenanceFlag("disk swap", 100.0, 200.0)
    assert not flag.expired(150.0) and flag.expired(200.0)
    fresh.clear("web/api")
    assert fresh.load("web/api") is None and not files[0].exists()

    (tmp_path / "state" / "db.json").write_text("{not json")
    broken = MaintenanceStore(tmp_path / "state").load("db")
    assert broken is not None and "unreadable" in broken.reason  # stay out, to be safe


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("2d") == 172800
    for bad in ("", "soon", "5x", "0s", "m5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_describe_says_what_happened() -> None:
    status = {
        "service": "web",
        "maintenance": {"reason": "swap", "until": None},
        "registered": True,
        "wanted": False,
        "registry": {"last_error": "RegistryUnavailable: not connected"},
    }
    assert describe(status) == (
        "web: in maintenance: swap; registered "
        "(registry write pending: RegistryUnavailable: not connected)"
    )
    up = {"service": "web", "maintenance": None, "registered": False, "wanted": False,
          "reason": "check http down (HTTP 503)"}  # fmt: skip
    assert describe(up) == "web: not in maintenance; not registered (check http down (HTTP 503))"


def service(**extra: object) -> ServiceConfig:
    base_cfg = {"host": "10.0.0.5", "port": 8080, "zk_hosts": ["z:2181"], "zk_path": "/s"}
    return ServiceConfig.model_validate({**base_cfg, **extra})


def test_reporter_identity_ignores_checks_but_not_the_record_or_registry() -> None:
    plain = reporter_identity(service())
    assert reporter_identity(service(checks=[{"type": "tcp"}], check_interval=2)) == plain
    assert reporter_identity(service(weight=3)) != plain
    assert reporter_identity(service(zk_path="/other")) != plain
    assert reporter_identity(service(labels={"az": "b"})) != plain


def test_etcd_key_is_deterministic() -> None:
    assert etcd_key("/", RECORD) == "/web-1_10.0.0.5_8080"
    assert etcd_key("/services/web", RECORD) == "/services/web/web-1_10.0.0.5_8080"


def test_config_rejects_a_record_synapse_would_refuse() -> None:
    with pytest.raises(ValueError, match="record nerve would register is invalid"):
        service(host="bad host;")


async def test_two_services_with_one_registration_are_refused_and_shutdown_is_quick() -> None:
    dead = f"127.0.0.1:{free_port()}"  # no ZooKeeper there: nothing was ever registered
    twin = zk_service(dead, "/s", 8080, checks=[])
    config = nerve_config({"a": twin, "b": dict(twin), "c": {**twin, "port": 8081}})
    async with running_nerve(config) as daemon:
        assert sorted(daemon.services) == ["a", "c"]
        stopping = time.monotonic()
    # Leaving running_nerve stopped it: no withdraw to wait for, nothing was registered.
    assert time.monotonic() - stopping < 1.9  # a withdraw would wait 2 s for ZooKeeper
