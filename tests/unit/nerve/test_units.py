"""Small pure pieces: the reporter's retry loop, maintenance flags, CLI parsing, keys."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest
from nerve_testlib import until

from nerve.config import ServiceConfig
from nerve.control import describe, parse_duration
from nerve.docker_config import DockerModeConfig
from nerve.docker_source import DockerSource
from nerve.maintenance import MaintenanceFlag, MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registries import reporter_identity
from nerve.reporters import base
from nerve.reporters.base import RegistryUnavailable, Reporter
from nerve.reporters.zookeeper import ZooKeeperReporter
from smartstack.record import Registration, etcd_key

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


class GatedReporter(ScriptedReporter):
    """Each registration waits for the test to let it finish."""

    def __init__(self, metrics: NerveMetrics) -> None:
        super().__init__(metrics)
        self.available = True
        self.gate = asyncio.Event()

    async def _register(self) -> bool:
        self.attempts += 1
        await self.gate.wait()
        self.registered, self.uncertain = True, False
        return True


async def test_a_session_lost_during_a_write_is_not_mistaken_for_success() -> None:
    reporter = GatedReporter(NerveMetrics())
    reporter.set_registered(True)
    reporter.start()
    try:
        await until(lambda: reporter.attempts == 1, what="the first write to start")
        reporter.mark_lost()  # the session / lease dies while the create is in flight
        reporter.gate.set()  # ... and then the create answers "done"
        await until(lambda: reporter.attempts >= 2, timeout=5, what="a second write")
        await asyncio.wait_for(reporter.wait_in_sync(), 5)
        assert reporter.registered and not reporter.uncertain
    finally:
        await reporter.stop(withdraw=False)


class SlowZooKeeper:
    """Stands in for a ZooKeeperConnection whose create never answers."""

    hosts, auth, connected = "zk:2181", None, True

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.client = SimpleNamespace(client_id=(1, b""))

    def add_listener(self, listener: object) -> None:
        pass

    def remove_listener(self, listener: object) -> None:
        pass

    async def call(self, method: str, *args: object, **kwargs: object) -> object:
        self.calls.append(method)
        if method == "create":
            await asyncio.Event().wait()
        return []


async def test_a_create_cut_short_by_shutdown_is_cleaned_up_by_the_withdraw() -> None:
    conn = SlowZooKeeper()
    reporter = ZooKeeperReporter(
        "svc",
        RECORD,
        conn,
        "/s",
        instance_id="web-1",
        node_type="persistent_sequential",  # type: ignore[arg-type]
    )
    reporter.set_registered(True)
    reporter.start()
    await until(lambda: "create" in conn.calls, timeout=5, what="the create")
    await reporter.stop(withdraw=True)
    # The create may land after all: a persistent node would outlive nerve. Look and delete.
    assert conn.calls[conn.calls.index("create") + 1 :] == ["get_children"]


class WatchedEvent(asyncio.Event):
    """An event that tells when somebody waits for it."""

    waiting = False

    async def wait(self) -> Literal[True]:
        self.waiting = True
        return await super().wait()


async def test_shutdown_withdraws_a_create_whose_answer_was_lost_once_reconnected() -> None:
    """The connection drops while a create is in flight, then SIGTERM: the node may exist
    (an ephemeral one lives on with the session, which the close may not reach), so the
    withdraw waits for the connection (bounded) instead of skipping it."""
    conn = SlowZooKeeper()
    reporter = ZooKeeperReporter("svc", RECORD, conn, "/s", instance_id="web-1", op_timeout=5.0)
    reporter._connected = WatchedEvent()
    reporter.set_registered(True)
    reporter.start()
    await until(lambda: "create" in conn.calls, timeout=5, what="the create")
    conn.connected = False  # type: ignore[misc]
    reporter._on_session("suspended")
    stopping = asyncio.ensure_future(reporter.stop(withdraw=True))
    await until(lambda: stopping.done() or reporter._connected.waiting, timeout=5, what="stop")
    conn.connected = True  # type: ignore[misc]
    reporter._on_session("connected")
    await asyncio.wait_for(stopping, 5)
    assert conn.calls[conn.calls.index("create") + 1 :] == ["get_children"]


async def test_docker_mode_withdraws_without_waiting_for_a_hung_docker_watch() -> None:
    withdrawn = asyncio.Event()

    class HungWatch:  # dockerd does not answer: its thread only ends after the withdrawals
        async def stop(self, timeout: float = 5.0) -> None:
            await withdrawn.wait()

    class Registered:
        async def stop(self, withdraw: bool = True) -> None:
            withdrawn.set()

    service = SimpleNamespace(halt=lambda: asyncio.sleep(0), reporter=Registered())
    cfg = DockerModeConfig.model_validate(
        {"service_defaults": {"zk_hosts": ["z:1"], "zk_path": "/s"}}
    )
    source = DockerSource(
        cfg,
        instance_id="h",
        registries=None,  # type: ignore[arg-type]
        metrics=NerveMetrics(),
        store=MaintenanceStore(None),
    )
    source.watch = HungWatch()  # type: ignore[assignment]
    source.services["web@c:80"] = service  # type: ignore[assignment]
    await asyncio.wait_for(source.stop(), 5)
    assert withdrawn.is_set()


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


def test_zk_auth_that_could_never_connect_is_refused() -> None:
    with pytest.raises(ValueError, match="'user:password'"):
        service(zk_auth={"credential": "just-a-password"})
    if importlib.util.find_spec("puresasl") is None:
        with pytest.raises(ValueError, match="pure-sasl"):
            service(zk_auth={"scheme": "sasl", "credential": "nerve:pw"})
    assert service(zk_auth={"credential": "nerve:pw"}).zk_auth is not None


def test_etcd_security_settings_that_would_not_hold_are_refused(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("(a certificate)")
    etcd = {"reporter_type": "etcd", "etcd_endpoints": ["https://e:2379"]}
    # https in clear text would carry the password unencrypted: never a silent downgrade.
    with pytest.raises(ValueError, match="is https: set etcd_tls"):
        service(**etcd)
    with pytest.raises(ValueError, match="ca_cert: no such file"):
        service(**etcd, etcd_tls={"ca_cert": str(tmp_path / "missing.pem")})
    with pytest.raises(ValueError, match="cert_cert and cert_key go together"):
        service(**etcd, etcd_tls={"ca_cert": str(ca), "cert_cert": str(ca)})
    with pytest.raises(ValueError, match="user and password go together"):
        service(**etcd, etcd_tls={}, etcd_user="root")
    with pytest.raises(ValueError, match="is http but etcd_tls is set"):
        service(**{**etcd, "etcd_endpoints": ["http://e:2379"]}, etcd_tls={})
    accepted = service(**etcd, etcd_tls={"ca_cert": str(ca)})
    assert accepted.etcd_tls is not None and accepted.etcd_tls.ca_cert == str(ca)


async def test_docker_mode_re_reads_the_container_list_every_resync_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`docker.resync_interval` reaches the engine watch (a silently dead event stream is
    mended by the next full re-read); 60 s when not given."""
    made: list[dict] = []

    class Watch:
        def __init__(self, *args: object, **kwargs: object) -> None:
            made.append(kwargs)

        def start(self) -> None:
            pass

    monkeypatch.setattr("nerve.docker_source.ContainerWatch", Watch)
    defaults = {"service_defaults": {"zk_hosts": ["z:1"], "zk_path": "/s"}}
    for given, want in (({}, 60.0), ({"resync_interval": 5}, 5.0)):
        cfg = DockerModeConfig.model_validate({**defaults, **given})
        DockerSource(cfg, instance_id="h", registries=None, metrics=NerveMetrics(),  # type: ignore[arg-type]
                     store=MaintenanceStore(None)).start()  # fmt: skip
        assert made[-1]["resync_interval"] == want


class _CancelledUnderIt(ScriptedReporter):
    """Its first write meets a call cancelled under it (a gRPC channel closed by another
    caller's failover): a CancelledError that is not the reporter's own stop."""

    async def _register(self) -> bool:
        if self.attempts == 0:
            self.attempts += 1
            raise asyncio.CancelledError
        return await super()._register()


async def test_a_write_cancelled_under_the_reporter_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before, the stray CancelledError ended the reporter's task for good: no write, no
    withdrawal, no re-registration after a lease loss, and no log line."""
    monkeypatch.setattr(base, "BACKOFF_FIRST", 0.01)
    metrics = NerveMetrics()
    reporter = _CancelledUnderIt(metrics)
    reporter.available = True
    reporter.start()
    try:
        reporter.set_registered(True)
        await until(lambda: reporter.registered, what="registration after the retry")
        assert reporter.attempts == 2
        errors = metrics.registry.get_sample_value(
            "nerve_registry_errors_total", {"service": "svc", "registry": "scripted"}
        )
        assert errors == 1  # counted and logged as a failed write
    finally:
        await reporter.stop(withdraw=True)
    assert not reporter.registered
