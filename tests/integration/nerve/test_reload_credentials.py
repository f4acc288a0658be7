"""A SIGHUP that changes nerve's registry credentials, against real etcd (user auth) and
ZooKeeper (digest auth, ``acl: creator``), in process.

Review s22 (A, B): the new credential not accepted yet (etcd's password changed later, a
typo) withdrew the working registration 5 s after the reload (HANDOVER_TIMEOUT) though the
new one never wrote; and once etcd had dropped the old credential, the old registration's
withdrawal could never be written and held back the new service for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from nerve_testlib import etcd_service, nerve_config, running_nerve, unique_path, until, zk_service

from nerve.config import NerveConfig
from nerve.daemon import CLOSE_TIMEOUT, WITHDRAW_TIMEOUT, NerveDaemon
from nerve.handover import HANDOVER_TIMEOUT
from nerve.reporters.etcd import EtcdReporter
from smartstack.etcd_json_client import EtcdJsonKVConnection
from smartstack.logs import _FIELDS
from testbed.etcd import EtcdCluster
from testbed.zookeeper import ZooKeeperServer

TTL = 6  # seconds: slow keep-alives on a loaded host must not lose the working lease
KEPT = HANDOVER_TIMEOUT + 2.0  # watched after the reload: the old code withdrew at 5 s


def etcdctl(endpoint: str, *args: str, stdin: str | None = None) -> None:
    subprocess.run(["etcdctl", f"--endpoints={endpoint}", *args], check=True, input=stdin,
                   capture_output=True, text=True, timeout=30,
                   env={**os.environ, "ETCDCTL_API": "3"})  # fmt: skip


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


@pytest.fixture
def auth_etcd(tmp_path: Path) -> Iterator[EtcdCluster]:
    """etcd with auth on: root, and nerve (password oldpw) may write under /nerve-test/."""
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    try:
        endpoint = cluster.endpoints[0]
        etcdctl(endpoint, "user", "add", "root:rootpw")
        etcdctl(endpoint, "role", "add", "rw")
        etcdctl(endpoint, "role", "grant-permission", "rw", "--prefix=true", "readwrite",
                "/nerve-test/")  # fmt: skip
        etcdctl(endpoint, "user", "add", "nerve:oldpw")
        etcdctl(endpoint, "user", "grant-role", "nerve", "rw")
        etcdctl(endpoint, "auth", "enable")
        yield cluster
    finally:
        cluster.stop()


def set_nerve_password(cluster: EtcdCluster, password: str) -> None:
    etcdctl(cluster.endpoints[0], "--user=root:rootpw", "user", "passwd", "nerve",
            "--interactive=false", stdin=f"{password}\n")  # fmt: skip


def etcd_web(cluster: EtcdCluster, path: str, transport: str) -> dict[str, Any]:
    return etcd_service(cluster.endpoints, path, 7001, checks=[], etcd_user="nerve",
                        etcd_password="oldpw", etcd_transport=transport,
                        etcd_lease_ttl=TTL)  # fmt: skip


def web_reporter(daemon: NerveDaemon) -> EtcdReporter:
    reporter = daemon.services["web"].reporter
    assert isinstance(reporter, EtcdReporter)
    return reporter


async def reload_with(daemon: NerveDaemon, config: dict[str, Any], **changes: Any) -> None:
    config["services"]["web"].update(changes)
    summary = await daemon.reload(NerveConfig.model_validate(config))
    assert summary["re_registered"] == ["web"]


async def watch_kept(present: Any, seconds: float) -> None:
    """``present()`` (sync or async) holds at every look for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = present()
        if asyncio.iscoroutine(value):
            value = await value
        assert value, f"withdrawn {seconds - (deadline - time.monotonic()):.2f} s after the reload"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_etcd_a_password_not_accepted_yet_keeps_the_working_registration(
    auth_etcd: EtcdCluster, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    """SIGHUP with the new password first, etcd's changed later: the registration under the
    old password stays (was: deleted 5 s after the reload), the new one is written once
    etcd takes the new password, and a stop meanwhile withdraws it promptly."""
    caplog.set_level(logging.INFO)
    path = unique_path()
    config = nerve_config({"web": etcd_web(auth_etcd, path, transport)})
    observer = EtcdJsonKVConnection(auth_etcd.endpoints, "root", "rootpw", timeout=3)
    try:
        async with running_nerve(config) as daemon:
            old = web_reporter(daemon)
            await until(lambda: old.registered, 30, "registration under oldpw")
            key = old.key.encode()
            await reload_with(daemon, config, etcd_password="newpw")
            await watch_kept(lambda: observer.with_client(lambda c: c.get(key)), KEPT)
            pending = events(caplog, "handover_pending")
            assert [r.levelno for r in pending] == [logging.ERROR]
            reason = getattr(pending[0], _FIELDS)["error"]  # the new write's error
            assert "authentication failed" in reason if transport == "json" else reason

            set_nerve_password(auth_etcd, "newpw")  # (etcd drops the old one's token)
            new = web_reporter(daemon)
            await until(lambda: new.registered, 30, "registration under newpw")
            kv = await until(lambda: observer.with_client(lambda c: c.get(key)), 10, "the key")
            assert kv.lease == new.lease_id
            await until(lambda: events(caplog, "handover_resolved"), 10, "the hand-over's end")
    finally:
        await observer.close()


@pytest.mark.parametrize("transport", ["json", pytest.param("grpc", marks=pytest.mark.long)])
async def test_etcd_after_the_old_password_died_a_reload_with_the_new_one_registers(
    auth_etcd: EtcdCluster, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    """etcd's password changed first: the lease is lost (keep-alives cannot authenticate
    again) and the old registration's withdrawal can never be written. The reload with the
    new password registers anyway (was: never), and a stop is still prompt."""
    caplog.set_level(logging.INFO)
    path = unique_path()
    config = nerve_config({"web": etcd_web(auth_etcd, path, transport)})
    observer = EtcdJsonKVConnection(auth_etcd.endpoints, "root", "rootpw", timeout=3)
    try:
        daemon = NerveDaemon(NerveConfig.model_validate(config))
        await daemon.start()
        try:
            old = web_reporter(daemon)
            await until(lambda: old.registered, 30, "registration under oldpw")
            key = old.key.encode()
            set_nerve_password(auth_etcd, "newpw")
            await until(lambda: not old.registered, 30, "the old lease lost")
            await reload_with(daemon, config, etcd_password="newpw")
            new = web_reporter(daemon)
            await until(lambda: new.registered, HANDOVER_TIMEOUT + 15, "registration under newpw")
            kv = await until(lambda: observer.with_client(lambda c: c.get(key)), 10, "the key")
            assert kv.lease == new.lease_id
            assert events(caplog, "retire_pending")  # the old withdrawal still cannot answer
        finally:
            started = time.monotonic()
            await daemon.stop()
            stopped = time.monotonic() - started
        assert stopped < WITHDRAW_TIMEOUT + CLOSE_TIMEOUT + 3.0  # (room for a loaded CI)
        assert await observer.with_client(lambda c: c.get(key)) is None
    finally:
        await observer.close()


# --------------------------------------------------------------------------- ZooKeeper

GOOD, TYPO = "nerve:s3cret", "nerve:s3cre7"


def zk_web(zk: ZooKeeperServer, path: str, credential: str) -> dict[str, Any]:
    auth = {"scheme": "digest", "credential": credential, "acl": "creator"}
    return zk_service(zk.hosts, path, 7001, checks=[], zk_auth=auth)


@pytest.fixture
def digest_kz(zk: ZooKeeperServer) -> Iterator[KazooClient]:
    """An observer with nerve's identity (``acl: creator`` lets only it read)."""
    client = KazooClient(hosts=zk.hosts, auth_data=[("digest", GOOD)])
    client.start(timeout=20)
    yield client
    client.stop()
    client.close()


@pytest.mark.long
async def test_zookeeper_a_credential_typo_keeps_the_registration_until_fixed(
    zk: ZooKeeperServer, digest_kz: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP with a typo in zk_auth: the node stays (was: deleted 5 s after the reload,
    for good); the SIGHUP that fixes the typo takes the wait over, and the node is never
    missing on the way."""
    caplog.set_level(logging.INFO)
    path = unique_path()
    config = nerve_config({"web": zk_web(zk, path, GOOD)})

    def nodes() -> list[str]:
        return digest_kz.get_children(path) if digest_kz.exists(path) else []

    async with running_nerve(config) as daemon:
        await until(nodes, what="the node")
        first = nodes()
        await reload_with(daemon, config, zk_auth=zk_web(zk, path, TYPO)["zk_auth"])
        await watch_kept(lambda: nodes() == first, KEPT)
        assert [r.levelno for r in events(caplog, "handover_pending")] == [logging.ERROR]

        await reload_with(daemon, config, zk_auth=zk_web(zk, path, GOOD)["zk_auth"])
        fixed = daemon.services["web"]
        await watch_kept(nodes, HANDOVER_TIMEOUT + 1.0)  # (a withdrawal first waits so long)
        await until(lambda: fixed.reporter.registered and fixed.predecessor is None, 10,
                    "the fixed registration, the hand-over over")  # fmt: skip
        assert len(nodes()) == 1


async def test_zookeeper_a_stop_during_a_waiting_hand_over_withdraws_promptly(
    zk: ZooKeeperServer, digest_kz: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path = unique_path()
    config = nerve_config({"web": zk_web(zk, path, GOOD)})
    daemon = NerveDaemon(NerveConfig.model_validate(config))
    await daemon.start()
    try:
        await until(lambda: digest_kz.exists(path) and digest_kz.get_children(path))
        await reload_with(daemon, config, zk_auth=zk_web(zk, path, TYPO)["zk_auth"])
        await until(lambda: events(caplog, "handover_pending"), HANDOVER_TIMEOUT + 5)
        assert digest_kz.get_children(path)
    finally:
        started = time.monotonic()
        await daemon.stop()
        stopped = time.monotonic() - started
    assert stopped < WITHDRAW_TIMEOUT + CLOSE_TIMEOUT + 1.0
    assert digest_kz.get_children(path) == []
