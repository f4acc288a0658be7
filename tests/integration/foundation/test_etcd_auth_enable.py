"""etcd user auth enabled on a running etcd (real etcd 3.4), on both transports: credentials
configured before ``etcdctl auth enable`` work while auth is off (without a token, as
etcdctl's do) and once it is on (a token is asked for when etcd refuses a call without one)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nerve_testlib import etcd_service, nerve_config, running_nerve, unique_path, until

from nerve.reporters.etcd import EtcdReporter
from smartstack.etcd import Client, EtcdConnection
from smartstack.etcd_json import EtcdJsonConnection
from smartstack.etcd_json_client import EtcdJsonKVConnection
from testbed.etcd import EtcdCluster
from testbed.process import free_port

CONNECTIONS = {"json": EtcdJsonKVConnection, "grpc": EtcdConnection}


def etcdctl(endpoint: str, *args: str) -> str:
    env = {**os.environ, "ETCDCTL_API": "3"}
    command = ["etcdctl", f"--endpoints={endpoint}", *args]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=30, env=env)
    return done.stdout


def users_without_auth(endpoint: str) -> None:
    """root (needed to enable auth) and nerve (read-write on /ae/); auth not enabled yet."""
    for args in (("user", "add", "root:rootpw"), ("user", "add", "nerve:pw"),
                 ("role", "add", "rw"),
                 ("role", "grant-permission", "rw", "--prefix=true", "readwrite", "/ae/"),
                 ("user", "grant-role", "nerve", "rw")):  # fmt: skip
        etcdctl(endpoint, *args)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == name]


@asynccontextmanager
async def nerve_user_connection(
    tmp_path: Path, transport: str, timeout: float
) -> AsyncIterator[tuple[str, Any]]:
    """A 1-member etcd with users nerve/root made and auth still off, and a connection as
    nerve: (its endpoint, the connection)."""
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    endpoint = cluster.endpoints[0]
    conn = CONNECTIONS[transport]([endpoint], "nerve", "pw", timeout=timeout)
    try:
        await asyncio.to_thread(users_without_auth, endpoint)
        yield endpoint, conn
    finally:
        await conn.close()
        cluster.stop()


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_credentials_set_before_auth_is_enabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    caplog.set_level(logging.INFO)
    async with nerve_user_connection(tmp_path, transport, 5) as (endpoint, conn):
        # Auth off: etcd refuses to authenticate ("authentication is not enabled").
        await conn.with_client(lambda c: c.put(b"/ae/1", b"one"))
        assert len(events(caplog, "etcd_auth_not_enabled")) == 1
        assert not events(caplog, "etcd_reauthenticate")

        await asyncio.to_thread(etcdctl, endpoint, "auth", "enable")
        # The first call after: a watch, refused without a token ("user name is empty").
        watch = await conn.watch_prefix(b"/ae/", 1)
        [reauthenticated] = events(caplog, "etcd_reauthenticate")
        assert "user name is empty" in str(reauthenticated.__dict__)
        await conn.with_client(lambda c: c.put(b"/ae/2", b"two"))
        seen: list[bytes] = []
        async with asyncio.timeout(10):
            async for event in watch:
                seen.append(event.kv.key)
                if len(seen) == 2:
                    break
        assert seen == [b"/ae/1", b"/ae/2"]
        await watch.cancel()
        # Written as nerve, with the token: root reads it; without credentials: refused.
        got = await asyncio.to_thread(etcdctl, endpoint, "--user=root:rootpw", "get", "/ae/2")
        assert got.split() == ["/ae/2", "two"]
        anonymous = CONNECTIONS[transport]([endpoint], timeout=5)
        try:
            with pytest.raises(Exception, match="user name is empty"):
                await anonymous.with_client(lambda c: c.get(b"/ae/1"))
        finally:
            await anonymous.close()


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_nerve_keeps_its_key_while_auth_is_enabled(tmp_path: Path, transport: str) -> None:
    """nerve registered with credentials on an etcd without auth keeps its key and lease
    when auth is enabled (it withdrew: the put failed at once, 412 / FailedPrecondition).
    A lease TTL of 4 s: a keep-alive has TTL/3 and etcd's Authenticate (bcrypt) took 0.5 s
    on a loaded test host, which a keep-alive that authenticates again spends first."""
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    endpoint = cluster.endpoints[0]
    try:
        await asyncio.to_thread(users_without_auth, endpoint)
        path, port = f"/ae{unique_path()}", free_port()
        service = etcd_service([endpoint], path, port, checks=[], etcd_user="nerve",
                               etcd_password="pw", etcd_transport=transport,
                               etcd_lease_ttl=4)  # fmt: skip
        async with running_nerve(nerve_config({"web": service})) as daemon:
            reporter = daemon.services["web"].reporter
            assert isinstance(reporter, EtcdReporter)
            await until(lambda: reporter.registered, what="registration, auth not enabled")
            lease = reporter.lease_id
            await asyncio.to_thread(etcdctl, endpoint, "auth", "enable")
            await asyncio.sleep(5)  # past the TTL: its keep-alives worked
            assert reporter.registered and reporter.keeper.reachable
            assert reporter.lease_id == lease
            key = f"{path}/i-test_127.0.0.1_{port}"
            got = await asyncio.to_thread(
                etcdctl, endpoint, "--user=root:rootpw", "get", key, "--keys-only"
            )
            assert got.split() == [key]
    finally:
        cluster.stop()


def count_authenticate(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Authenticate requests the connections make (each costs etcd ~0.5 s of bcrypt)."""
    made = [0]
    for cls in (Client, EtcdJsonConnection):
        real = cls._authenticate

        async def counted(self: Any, *args: Any, real: Any = real) -> Any:
            made[0] += 1
            return await real(self, *args)

        monkeypatch.setattr(cls, "_authenticate", counted)
    return made


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_calls_in_flight_when_auth_is_enabled_all_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    transport: str,
) -> None:  # fmt: skip
    """40 calls at once on one connection (40 services' listings, a nerve's writes), the
    first after auth enable, all refused without a token: one re-authentication for them
    all. It closed the client under the others' calls (gRPC: up to 49 of 50 failed, "closed
    by a failover") and each caller asked for its own token (JSON: 50, all timed out)."""
    caplog.set_level(logging.INFO)
    async with nerve_user_connection(tmp_path, transport, 10) as (endpoint, conn):
        await conn.with_client(lambda c: c.put(b"/ae/0", b"v"))
        await asyncio.to_thread(etcdctl, endpoint, "auth", "enable")
        made = count_authenticate(monkeypatch)
        calls = [
            conn.with_client(lambda c, i=i: c.put(f"/ae/{i}".encode(), b"v")) for i in range(40)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert made[0] == 1
        assert len(events(caplog, "etcd_reauthenticate")) == 1


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_auth_not_enabled_is_said_once_across_reconnects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    """Logged at every connect before (each failover, each endpoint turn)."""
    caplog.set_level(logging.INFO)
    async with nerve_user_connection(tmp_path, transport, 5) as (_endpoint, conn):
        for turn in range(4):
            await conn.with_client(lambda c, turn=turn: c.put(b"/ae/1", str(turn).encode()))
            await conn.rotate("a reconnect")
        await conn.with_client(lambda c: c.get(b"/ae/1"))
        assert len(events(caplog, "etcd_auth_not_enabled")) == 1
        assert conn.failovers == 4  # it did connect anew each time
