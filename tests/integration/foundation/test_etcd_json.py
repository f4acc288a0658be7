"""etcd's JSON gateway connection (smartstack.etcd_json) against real etcd 3.4: fail-over
past a dead endpoint, user auth and a forgotten token, mutual TLS, a watch's end."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path

import pytest

from smartstack.etcd_http import HttpStatusError
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.registry_auth import EtcdTLS
from testbed.etcd import EtcdCluster
from testbed.process import free_port
from testbed.tls import make_test_pki


def etcdctl(endpoint: str, *args: str, tls: list[str] | None = None) -> str:
    env = {**os.environ, "ETCDCTL_API": "3"}
    command = ["etcdctl", f"--endpoints={endpoint}", *(tls or []), *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=30, env=env)
    return done.stdout


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


async def test_lists_watches_and_passes_over_a_dead_endpoint(etcd: EtcdCluster) -> None:
    live = etcd.endpoints[0]
    await asyncio.to_thread(etcdctl, live, "put", "/json/a/1", "one")
    conn = EtcdJsonConnection([f"127.0.0.1:{free_port()}", live], timeout=2, start=0)
    try:
        listing = await conn.list_prefix(b"/json/a/", 5)
        assert [(kv.key, kv.value) for kv in listing.kvs] == [(b"/json/a/1", b"one")]
        assert conn.failovers == 1 and conn.current_endpoint == live
        assert await conn.fingerprint(b"/json/a/") == (1, listing.kvs[0].mod_revision)
        watch = await conn.watch_prefix(b"/json/a/", listing.revision + 1)
        await asyncio.to_thread(etcdctl, live, "put", "/json/a/2", "two")
        await asyncio.to_thread(etcdctl, live, "put", "/json/ab", "not ours")
        await asyncio.to_thread(etcdctl, live, "del", "/json/a/1")
        seen: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            async for event in watch:
                seen.append((event.kind, event.kv.key))
                if len(seen) == 2:
                    break
        assert seen == [("PUT", b"/json/a/2"), ("DELETE", b"/json/a/1")]
        await watch.cancel()
        assert [e async for e in watch] == []  # a cancelled watch ends, without an error
    finally:
        await conn.close()


async def test_a_watch_ends_with_a_connection_error_when_etcd_stops(tmp_path: Path) -> None:
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    conn = EtcdJsonConnection(cluster.endpoints, timeout=2)
    try:
        watch = await conn.watch_prefix(b"/json/stop/", 1)
        await asyncio.to_thread(cluster.stop_member, 0)
        with pytest.raises(conn.connection_errors):
            async with asyncio.timeout(10):
                async for _ in watch:
                    pass
    finally:
        await conn.close()
        cluster.stop()


async def test_user_auth_and_a_token_etcd_forgot(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    endpoint = cluster.endpoints[0]
    conn = EtcdJsonConnection([endpoint], "root", "s3cret", timeout=3)
    anonymous = EtcdJsonConnection([endpoint], timeout=3)
    try:
        await asyncio.to_thread(etcdctl, endpoint, "user", "add", "root:s3cret")
        await asyncio.to_thread(etcdctl, endpoint, "auth", "enable")
        assert (await conn.list_prefix(b"/json/auth/", 5)).kvs == []
        conn._token = "forgotten"  # what a restarted etcd (or --auth-token-ttl) leaves us
        watch = await conn.watch_prefix(b"/json/auth/", 1)
        await watch.cancel()
        assert len(events(caplog, "etcd_reauthenticate")) == 1
        with pytest.raises(HttpStatusError) as refused:
            await anonymous.list_prefix(b"/json/auth/", 5)
        assert anonymous.failovers == 0  # refused, not a connection problem
        assert "user name" in refused.value.message or "token" in refused.value.message
    finally:
        await conn.close()
        await anonymous.close()
        cluster.stop()


@pytest.mark.parametrize("server_usage", ["serverAuth,clientAuth", "serverAuth"])
async def test_mutual_tls(
    tmp_path: Path, server_usage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Under --client-cert-auth etcd's gateway calls etcd back with etcd's own certificate:
    it works when that certificate allows clientAuth; else the failure says so."""
    caplog.set_level(logging.INFO)
    pki = make_test_pki(tmp_path / "pki", server_usage)
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd", tls=pki).start()
    tls = EtcdTLS(ca_cert=str(pki.ca_cert), cert_cert=str(pki.client_cert),
                  cert_key=str(pki.client_key))  # fmt: skip
    conn = EtcdJsonConnection([f"https://{e}" for e in cluster.endpoints], tls=tls, timeout=3)
    untrusted = EtcdJsonConnection([f"https://{e}" for e in cluster.endpoints],
                                   tls=EtcdTLS(), timeout=3)  # fmt: skip
    try:
        if server_usage == "serverAuth":
            with pytest.raises(HttpStatusError):
                await conn.list_prefix(b"/json/tls/", 5)
            [failover, *_] = events(caplog, "etcd_failover")
            assert "etcd_transport: grpc" in failover.smartstack_fields["error"]  # type: ignore[attr-defined]
            return
        watch = await conn.watch_prefix(b"/json/tls/", 1)
        assert (await conn.list_prefix(b"/json/tls/", 5)).kvs == []
        await watch.cancel()
        # etcd's certificate checked against the system CAs: refused, and said so.
        with pytest.raises(OSError):
            await untrusted.list_prefix(b"/json/tls/", 5)
        [failed, *_] = events(caplog, "etcd_tls_failed")
        assert "CERTIFICATE_VERIFY_FAILED" in failed.smartstack_fields["error"]  # type: ignore[attr-defined]
    finally:
        await conn.close()
        await untrusted.close()
        cluster.stop()
