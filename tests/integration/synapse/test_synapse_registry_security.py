"""Registry security end to end: nerve registers, synapse reads, both in-process, through
real servers: etcd with mutual TLS, etcd with user auth, ZooKeeper with digest and SASL
(DIGEST-MD5) identities and nerve's ``acl: creator``.

synapse runs with file_output only (no HAProxy): ``<service>.json`` is what it found.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kazoo.security import Permissions
from synapse_testlib import eventually, sample

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from smartstack.etcd import EtcdConnection
from smartstack.registry_auth import EtcdTLS
from smartstack.zookeeper import ZooKeeperConnection
from synapse.config import SynapseConfig
from synapse.daemon import SynapseDaemon
from testbed.etcd import EtcdCluster
from testbed.process import free_port, wait_processes_gone
from testbed.tls import LocalPKI, make_test_pki
from testbed.zookeeper import ZooKeeperServer

# ZooKeeper's SASL users (DIGEST-MD5) come from a JAAS file; digest auth needs no setup.
JAAS = """Server {
  org.apache.zookeeper.server.auth.DigestLoginModule required
  user_nerve="s3cret";
};
"""
SASL_PROVIDER = "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider"
NERVE_CREDENTIAL = "nerve:s3cret"


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPKI:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki: LocalPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(size=1, workdir=tmp_path_factory.mktemp("etcd-tls"), tls=pki).start()
    yield cluster
    cluster.stop()
    wait_processes_gone([p for p in cluster.pids if p is not None])


@pytest.fixture(scope="module")
def sasl_zk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    workdir = tmp_path_factory.mktemp("zk-sasl")
    jaas = workdir / "jaas.conf"
    jaas.write_text(JAAS)
    server = ZooKeeperServer(
        workdir=workdir / "zk",
        extra_config=[SASL_PROVIDER],
        jvm_args=[f"-Djava.security.auth.login.config={jaas}"],
    ).start()
    yield server
    server.stop()
    wait_processes_gone([server.pid] if server.pid else [])


# --------------------------------------------------------------------------- daemons


def client_tls(pki: LocalPKI, ca: bool = True) -> dict[str, str]:
    tls = {"cert_cert": str(pki.client_cert), "cert_key": str(pki.client_key)}
    return {"ca_cert": str(pki.ca_cert), **tls} if ca else tls


@asynccontextmanager
async def running(
    tmp_path: Path, registry: dict[str, Any], services: dict[str, dict[str, Any]]
) -> AsyncIterator[tuple[SynapseDaemon, Path, int]]:
    """nerve registering one service (no checks: up) with ``registry`` keys, then synapse
    watching it once per ``services`` entry (discovery blocks); yields synapse, its
    file_output directory and the registered port."""
    port = free_port()
    nerve = NerveDaemon(
        NerveConfig.model_validate({
            "instance_id": "i-sec",
            "admin": {"port": None},
            "services": {"web": {"host": "127.0.0.1", "port": port, "checks": [], **registry}},
        })
    )  # fmt: skip
    out = tmp_path / "out"
    synapse = SynapseDaemon(
        SynapseConfig.model_validate({
            "services": {name: {"discovery": d} for name, d in services.items()},
            "file_output": {"output_directory": str(out)},
            "admin": {"port": None},
            "startup_wait": 0.5,
        })
    )  # fmt: skip
    await nerve.start()
    try:
        # Registered first: ZooKeeper does not even tell a client that a node appeared when
        # its ACL hides the node, so an anonymous synapse started earlier would just wait.
        await eventually(lambda: nerve.services["web"].reporter.registered, 20, "registration")
        await synapse.start()
        try:
            yield synapse, out, port
        finally:
            await synapse.stop()
    finally:
        await nerve.stop()


def found(out: Path, service: str) -> list[int] | None:
    try:
        return [s["port"] for s in json.loads((out / f"{service}.json").read_text())]
    except (OSError, ValueError):
        return None


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


# --------------------------------------------------------------------------- etcd


async def test_etcd_mutual_tls_and_clients_that_may_not_in(
    tls_etcd: EtcdCluster, pki: LocalPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    https = [f"https://{e}" for e in tls_etcd.endpoints]
    path = f"/sec/{uuid.uuid4().hex[:8]}"
    registry = {"reporter_type": "etcd", "etcd_endpoints": https, "etcd_path": path,
                "etcd_lease_ttl": 2, "etcd_tls": client_tls(pki)}  # fmt: skip
    retry = {"base_interval": 0.1, "max_interval": 0.5}
    watch = {"method": "etcd", "path": path, "retry_policy": retry}
    services = {
        "tls": {**watch, "endpoints": https, "etcd_tls": client_tls(pki)},
        # Our client certificate, but etcd's certificate checked against the system CAs.
        "noca": {**watch, "endpoints": https, "etcd_tls": client_tls(pki, ca=False)},
        # No scheme and no etcd_tls: clear text, which the TLS port refuses.
        "plain": {**watch, "endpoints": tls_etcd.endpoints},
    }
    async with running(tmp_path, registry, services) as (synapse, out, port):
        # nerve registered through TLS (with its client certificate), synapse read it so.
        await eventually(lambda: found(out, "tls") == [port], 20, "the server through TLS")
        await eventually(lambda: events(caplog, "etcd_tls_failed"), 20, "etcd_tls_failed")
        await eventually(
            lambda: synapse.watchers["plain"].last_error, 20, "the clear-text watcher failing"
        )
        # A client certificate: gRPC (etcd's gateway would need etcd's own certificate to
        # allow clientAuth, which this PKI's does not).
        assert synapse.watchers["tls"].status()["transport"] == "grpc"
        for name in ("noca", "plain"):
            watcher = synapse.watchers[name]
            assert not watcher.connected and watcher.restarts == 0
            assert not found(out, name)
    [failed, *_] = events(caplog, "etcd_tls_failed")
    fields = failed.smartstack_fields  # type: ignore[attr-defined]
    assert "CERTIFICATE_VERIFY_FAILED" in fields["error"] and "etcd_tls" in fields["hint"]
    assert fields["endpoint"] == https[0]


def etcdctl(endpoint: str, *args: str) -> None:
    env = {**os.environ, "ETCDCTL_API": "3"}
    command = ["etcdctl", f"--endpoints={endpoint}", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=30, env=env)


async def test_etcd_user_auth_for_nerve_and_synapse(tmp_path: Path) -> None:
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    try:
        endpoint = cluster.endpoints[0]
        await asyncio.to_thread(etcdctl, endpoint, "user", "add", "root:s3cret")
        await asyncio.to_thread(etcdctl, endpoint, "auth", "enable")
        path = "/sec/auth"
        user = {"etcd_user": "root", "etcd_password": "s3cret"}
        registry = {"reporter_type": "etcd", "etcd_endpoints": [endpoint], "etcd_path": path,
                    "etcd_lease_ttl": 2, **user}  # fmt: skip
        watch = {"method": "etcd", "endpoints": [endpoint], "path": path,
                 "retry_policy": {"base_interval": 0.1, "max_interval": 0.5}}  # fmt: skip
        services = {"auth": {**watch, **user}, "anonymous": watch}
        async with running(tmp_path, registry, services) as (synapse, out, port):
            await eventually(lambda: found(out, "auth") == [port], 20, "the server with auth")
            anonymous = synapse.watchers["anonymous"]
            await eventually(lambda: anonymous.last_error, 20, "the anonymous watcher refused")
            assert not anonymous.connected and anonymous.restarts == 0
            assert not found(out, "anonymous")
    finally:
        cluster.stop()


async def test_a_tls_connection_never_falls_back_to_clear_text(tls_etcd: EtcdCluster) -> None:
    # What a misconfigured CA looks like at the connection level: an error, never data.
    conn = EtcdConnection(tls_etcd.endpoints, timeout=2, tls=EtcdTLS())
    try:
        with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
            await conn.with_client(lambda c: c.get(b"/x"))
    finally:
        await conn.close()


# --------------------------------------------------------------------------- ZooKeeper


@pytest.mark.parametrize("scheme", ["digest", "sasl"])
async def test_zookeeper_creator_acl_is_read_only_with_the_same_identity(
    sasl_zk: ZooKeeperServer, tmp_path: Path, scheme: str
) -> None:
    # A root of its own: parents nerve creates get its ACL too, readable by one identity.
    path = f"/sec-{scheme}-{uuid.uuid4().hex[:8]}/web"
    auth = {"scheme": scheme, "credential": NERVE_CREDENTIAL}
    registry = {"zk_hosts": [sasl_zk.hosts], "zk_path": path, "zk_session_timeout": 2.0,
                "zk_auth": {**auth, "acl": "creator"}}  # fmt: skip
    watch = {"method": "zookeeper", "hosts": [sasl_zk.hosts], "path": path,
             "retry_policy": {"base_interval": 0.1, "max_interval": 0.5}}  # fmt: skip
    services = {"same": {**watch, "zk_auth": auth}, "anonymous": watch}
    async with running(tmp_path, registry, services) as (synapse, out, port):
        await eventually(lambda: found(out, "same") == [port], 20, "the server read with auth")
        anonymous = synapse.watchers["anonymous"]
        await eventually(lambda: anonymous.status()["denied"], 20, "the anonymous listing refused")
        # It keeps trying (with backoff) but logs and counts the refusal once; never crashes.
        await eventually(lambda: anonymous.last_error and "NoAuth" in anonymous.last_error, 20)
        await asyncio.sleep(1.0)  # a few retries (max_interval 0.5 s)
        bad = sample(synapse.registry, "synapse_bad_records_total",
                     service="anonymous", method="zookeeper")  # fmt: skip
        assert bad == 1 and anonymous.restarts == 0 and not found(out, "anonymous")
        # The node is nerve's identity's alone: ZooKeeper says so (asked as that identity).
        [conn] = [c for c in synapse.zk_pool.connections() if c.auth]
        [child] = await conn.call("get_children", path)
        acls, _ = await conn.call("get_acls", f"{path}/{child}")
        assert [(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls] == [
            (scheme, "nerve", Permissions.ALL)
        ]


async def test_a_wrong_sasl_password_is_logged_clearly(
    sasl_zk: ZooKeeperServer, caplog: pytest.LogCaptureFixture
) -> None:
    conn = ZooKeeperConnection([sasl_zk.hosts], asyncio.get_running_loop(), 2.0,
                               ("sasl", "nerve:wrong"))  # fmt: skip
    conn.start()
    try:
        await eventually(lambda: events(caplog, "zk_auth_failed"), 20, "zk_auth_failed")
        assert not conn.connected
    finally:
        await conn.close()
