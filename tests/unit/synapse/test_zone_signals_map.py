"""Zone signals (docs/zone-routing.md), continued: the server-zone map
(synapse/haproxy/zone_map.py) and its failures, the zones on /status, record zones and
zone backends' names, the admin port on a zone address, managed mode's failover between
zone backends. Pure: no process, no socket."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.sockets import SocketUnavailable
from synapse.haproxy.zone_map import ZoneMapSync, map_path, runtime_commands, wanted_entries
from synapse.metrics import SynapseMetrics
from synapse.port_clash import admin_port_clashes
from synapse.resilience_config import ZONE_OBSERVE
from synapse.status_page import zone_mode
from synapse.zone_apply import ZoneRouter
from synapse.zone_backends import FORGET_AFTER, MAX_RECORD_ZONES
from synapse.zone_state import Evacuations

from test_zone_signals import SIGNALS, by_name, doc, load, refusal, service  # isort: skip

# --- the server-zone map ----------------------------------------------------------------------


def test_map_entries_and_runtime_commands(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    routed = ZoneRouter("az1").routed(service(config, az1=1, az2=1))
    entries = wanted_entries(routed)
    assert entries == {"web/az1-0_10.0.0.1:80": "az1", "web/az2-0_10.0.1.1:80": "az2"}
    assert wanted_entries([routed[1]]) is None, "a zone backend has no cookie of its own"
    path = Path("/m.map")
    old = {"web/a": "az1", "web/b": "az2", "web/c": "az3"}
    new = {"web/a": "az1", "web/b": "az3", "web/d": "az1"}
    assert runtime_commands(old, new, path) == [
        "add map /m.map web/d az1", "set map /m.map web/b az3", "del map /m.map web/c"]  # fmt: skip


def test_zone_routing_without_signals_builds_no_map(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, {"header": "X-Zone"}))
    routed = ZoneRouter("az1").routed(service(config, az1=1))
    assert wanted_entries(routed) is None


def test_status_shows_the_signals_and_the_zones_taking_named_traffic(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    router = ZoneRouter("az1", Evacuations().evacuate("az2"))
    router.routed(service(config, az1=2, az2=2))
    web = router.status()["web"]
    assert web["signals"] == SIGNALS
    assert web["named"] == ["az1"] and web["mode"] == "local"
    plain = load(tmp_path, doc(tmp_path, {}))
    router.routed(service(plain, az1=1))
    assert "signals" not in router.status()["web"]


def test_a_zone_backend_named_like_another_service_is_refused(tmp_path: Path) -> None:
    document = doc(tmp_path, {"header": "X-Zone"})
    document["services"]["other"] = {
        "discovery": {"method": "base"},
        "haproxy": {"backend_name": "web_zone_az2"},
    }
    text = refusal(tmp_path, document)
    assert "services.web.zone_routing: the backend of zone az2, 'web_zone_az2'" in text, text


def test_status_page_shows_the_signals_in_one_line() -> None:
    zones = {"local_zone": "az1", "mode": "local", "evacuated": [], "signals": SIGNALS}
    assert zone_mode(zones) == {
        "mode": "local", "local": "az1", "evacuated": [],
        "sig": "cookie SRVZONE · header X-Zone · 1 address"}  # fmt: skip
    assert "sig" not in (zone_mode({"mode": "local"}) or {})


def test_a_zone_backend_named_like_another_service_name_is_refused(tmp_path: Path) -> None:
    document = doc(tmp_path, {"header": "X-Zone"})
    document["services"]["web_zone_az3"] = {
        "discovery": {"method": "base"},
        "haproxy": {"backend_name": "elsewhere"},
    }
    text = refusal(tmp_path, document)
    assert "the backend of zone az3, 'web_zone_az3', is the name of service 'web_zone_az3'" in text


def test_a_record_zone_never_takes_a_configured_name(tmp_path: Path) -> None:
    # Zones seen in the records: a backend named like another service (its name or its
    # backend) would overwrite that service's state on the HAProxy side.
    document = doc(tmp_path, {**SIGNALS, "zones": []})
    base = {"discovery": {"method": "base"}}
    document["services"]["web_zone_evil"] = {**base, "haproxy": {"backend_name": "elsewhere"}}
    document["services"]["other"] = {**base, "haproxy": {"backend_name": "web_zone_az9"}}
    config = load(tmp_path, document)
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    router.configure(config)
    routed = by_name(router.routed(service(config, az1=1, az9=1, evil=2)))
    assert list(routed) == ["web", "web_zone_az1", "web_zone_az2"]
    assert routed["web"].zones == ("az1", "az2")
    assert len(routed["web"].servers) == 4, "their servers stay in the service's backend"
    again = by_name(router.routed(service(config, az1=2, az9=1, evil=2)))
    assert list(again) == list(routed)
    refused = metrics.registry.get_sample_value(
        "synapse_zone_backends_refused_total", {"service": "web", "reason": "name_clash"}
    )
    assert refused == 2, "counted once per zone"


def refused(metrics: SynapseMetrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value(
        "synapse_zone_backends_refused_total", {"service": "web", "reason": reason}
    )


def test_unlisted_record_zones_are_counted_once(tmp_path: Path) -> None:
    config = load(tmp_path, doc(tmp_path, SIGNALS))
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    for count in (1, 2):
        routed = by_name(router.routed(service(config, az1=count, az8=1, az9=1)))
        assert set(routed) == {"web", "web_zone_az1", "web_zone_az2", "web_zone_az3"}
    assert refused(metrics, "not_listed") == 2


def test_record_zones_are_capped_and_idle_ones_forgotten_with_the_next_change(
    tmp_path: Path,
) -> None:
    config = load(tmp_path, doc(tmp_path, {"header": "X-Zone", "zones": []}))
    metrics = SynapseMetrics(CollectorRegistry())
    router = ZoneRouter("az1", metrics=metrics)
    now = [1000.0]
    router.backends.clock = lambda: now[0]
    many = {f"z{i:02}": 1 for i in range(MAX_RECORD_ZONES + 3)}
    routed = router.routed(service(config, **many))
    assert len(routed[0].zones) == MAX_RECORD_ZONES and len(routed) == MAX_RECORD_ZONES + 1
    assert len(routed[0].servers) == MAX_RECORD_ZONES + 3, "every server stays served"
    assert refused(metrics, "cap") == 3
    # the zones empty out; past FORGET_AFTER they stay until something else changes the
    # service's backends (dropping them alone would cost a reload)
    kept = router.routed(service(config, z00=1))[0].zones
    assert len(kept) == MAX_RECORD_ZONES
    now[0] += FORGET_AFTER + 1
    assert router.routed(service(config, z00=2))[0].zones == kept
    # a new zone is a reload anyway: the idle ones go with it
    assert router.routed(service(config, z00=2, fresh=1))[0].zones == ("fresh", "z00")


def test_the_admin_port_on_a_zone_address_is_a_clash(tmp_path: Path) -> None:
    document = doc(tmp_path, {"zone_of_address": {"127.0.0.2": "az2", "::2": "az3"}})
    document["services"]["web"]["haproxy"]["bind_address"] = "127.0.0.1"
    document["admin"] = {"host": "127.0.0.4", "port": 3000}
    config = load(tmp_path, document)
    assert admin_port_clashes(config) == []
    config.admin.host = "127.0.0.2"
    [line] = admin_port_clashes(config)
    assert "services.web.zone_routing.zone_of_address: HAProxy binds 127.0.0.2:3000" in line
    config.admin.host = "::2"
    [line] = admin_port_clashes(config)
    assert "HAProxy binds [::2]:3000" in line
    document["admin"] = {"host": "127.0.0.2", "port": 3000}
    assert "clashes with services.web.zone_routing.zone_of_address" in refusal(tmp_path, document)


class FlakyRuntime:
    """A runtime client whose ``show map`` fails ``failures`` times, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def execute(self, command: str) -> str:
        if self.failures:
            self.failures -= 1
            raise SocketUnavailable("/run/haproxy.sock: no answer")
        return "0x1 web/a az1\n"

    async def run_ops(self, ops: list[Any]) -> list[str | None]:
        self.sent += [op.command for op in ops]
        return [None] * len(ops)


async def test_a_zone_map_that_cannot_be_read_is_counted_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    runtime = FlakyRuntime(failures=2)
    sync = ZoneMapSync([runtime], HAProxyMetrics(registry))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.wanted = {"web/a": "az1", "web/b": "az2"}
    for _ in range(2):
        assert await sync.sync() == ([], [])
    failed = registry.get_sample_value(
        "synapse_haproxy_runtime_command_errors_total", {"kind": "map_show"}
    )
    assert failed == 2
    logged = [r for r in caplog.records if r.getMessage() == "haproxy_zone_map_read_failed"]
    assert len(logged) == 1, "logged once until it answers again"
    applied, failures = await sync.sync()
    path = map_path(tmp_path / "haproxy.cfg")
    assert applied == [f"add map {path} web/b az2"] and failures == []
    assert path.read_text().splitlines()[1:] == ["web/a az1", "web/b az2"]


async def test_a_zone_map_file_that_cannot_be_written_fails_no_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while a server joins: HAProxy's map takes the change, the file write's
    OSError is said once and counted, not raised (it failed every later apply, everyone's
    changes backing off up to 30 s); the next apply writes the file once it can."""
    import errno

    from synapse.haproxy import zone_map

    caplog.set_level(logging.INFO, logger="synapse.haproxy")
    registry = CollectorRegistry()
    runtime = FlakyRuntime(failures=0)
    sync = ZoneMapSync([runtime], HAProxyMetrics(registry))  # type: ignore[list-item]
    sync.configure(tmp_path / "haproxy.cfg")
    sync.wanted = {"web/a": "az1", "web/b": "az2"}
    write_atomic = zone_map.write_atomic

    def full(path: Path, data: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zone_map, "write_atomic", full)
    path = map_path(tmp_path / "haproxy.cfg")
    assert await sync.sync() == ([f"add map {path} web/b az2"], [])
    assert await sync.sync() == ([], [])  # the next apply: nothing to send, the file owed
    errors = {"map": "zones"}
    assert registry.get_sample_value("synapse_haproxy_map_file_write_errors_total", errors) == 2
    assert not path.exists()
    monkeypatch.setattr(zone_map, "write_atomic", write_atomic)
    assert await sync.sync() == ([], [])
    assert path.read_text().splitlines()[1:] == ["web/a az1", "web/b az2"]
    said = [r.getMessage() for r in caplog.records]
    assert said.count("haproxy_map_file_write_failed") == 1, said
    assert said.count("haproxy_map_file_written") == 1, said


def test_in_managed_mode_a_zone_backend_fails_over_to_the_other_zones(tmp_path: Path) -> None:
    """A request naming a zone that just died is retried on that zone backend's backups:
    the other zones' servers, weighted as the decision would be without that zone."""
    document = doc(tmp_path, SIGNALS)
    document["haproxy"] = {"config_file_path": str(tmp_path / "haproxy.cfg"), "managed": {}}
    config = load(tmp_path, document)
    router = ZoneRouter("az1")
    router.configure(config)
    routed = by_name(router.routed(service(config, az1=2, az2=2, az3=6)))

    def weights(backend: str, backup: bool) -> dict[str, int]:
        servers = routed[backend].servers
        return {s.name.split("_")[0]: s.weight or 0 for s in servers if s.backup == backup}

    def zone_total(found: dict[str, int], zone: str) -> int:
        return sum(w for name, w in found.items() if name.startswith(zone))

    az1 = routed["web_zone_az1"]
    assert sorted(weights("web_zone_az1", False)) == ["az1-0", "az1-1"]
    spill = weights("web_zone_az1", True)  # az1 gone: the even spill over az2 and az3
    assert len(spill) == 8 and zone_total(spill, "az2") == zone_total(spill, "az3") == 512
    home = weights("web_zone_az2", True)  # az2 gone: the local zone serves
    assert zone_total(home, "az1") == 512 and zone_total(home, "az3") == 0
    assert "option allbackups" in az1.config.haproxy.backend
    assert az1.config.haproxy.observe == ZONE_OBSERVE  # HAProxy finds the dead zone
    # HAProxy's checks turned off: nothing would find a dead zone, so no backups either
    document["services"]["web"]["haproxy"]["health_check"] = {"enabled": False}
    off = load(tmp_path, document)
    router.configure(off)
    plain = by_name(router.routed(service(off, az1=2, az2=2, az3=6)))
    assert not any(s.backup for s in plain["web_zone_az1"].servers)
    assert "option allbackups" not in plain["web_zone_az1"].config.haproxy.backend
