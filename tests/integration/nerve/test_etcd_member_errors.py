"""nerve on etcd's JSON gateway when the member it talks to answers every call with an HTTP
error and the gateway's JSON body (504, 429: a member without quorum, overloaded, or a
proxy before it): keep-alives go to another member and the lease (and the key with it)
lives on. With no other member to go to, once keep-alives failed past the lease's expiry
/status says so (registered: false, the error), and a new lease is granted when etcd
answers again."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aetcd
import pytest
from etcd_errproxy import ErrorProxy
from nerve_testlib import LEASE_TTL, etcd_service, nerve_config, running_nerve, unique_path, until

from nerve.reporters.etcd import EtcdReporter
from testbed.etcd import EtcdCluster
from testbed.process import free_port


@pytest.fixture
async def proxy(etcd: EtcdCluster) -> AsyncIterator[ErrorProxy]:
    p = await ErrorProxy(etcd.endpoints[0]).start()
    yield p
    await p.close()


@pytest.fixture
async def client(etcd: EtcdCluster) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as c:
        yield c


@pytest.mark.parametrize("mode", ["504", "429"])
async def test_the_lease_lives_on_through_another_member(
    etcd: EtcdCluster, proxy: ErrorProxy, client: aetcd.Client, mode: str
) -> None:
    path, port = unique_path(), free_port()
    key = f"{path}/i-test_127.0.0.1_{port}".encode()
    service = etcd_service([proxy.endpoint, etcd.endpoints[0]], path, port, checks=[])
    async with running_nerve(nerve_config({"web": service})) as daemon:
        reporter = daemon.services["web"].reporter
        assert isinstance(reporter, EtcdReporter)
        conn = reporter.keeper.conn
        first = await until(lambda: client.get(key), what="the key")
        if conn.current_endpoint != proxy.endpoint:
            await conn.rotate("test: onto the member that will fail")
        proxy.fail(mode)
        deadline = time.monotonic() + 3 * LEASE_TTL  # unrenewed, the lease lasts one TTL
        while time.monotonic() < deadline:
            kv = await client.get(key)
            assert kv is not None, "the lease expired: its key is gone"
            assert kv.lease == first.lease
            await until(lambda: reporter.registered and reporter.last_error is None, 1)
        assert conn.current_endpoint == etcd.endpoints[0]
        # The failing member was used and left: by a keep-alive, or by nerve's look at its
        # own key (every 3 s, 08ba4b6) when that came first.
        refused = {k: n for k, n in proxy.counts.items() if k.startswith(f"{mode} ")}
        assert set(refused) & {f"{mode} /v3/lease/keepalive", f"{mode} /v3/kv/range"}, refused


async def test_a_lease_run_out_is_said_and_replaced(
    etcd: EtcdCluster, proxy: ErrorProxy, client: aetcd.Client
) -> None:
    path, port = unique_path(), free_port()
    key = f"{path}/i-test_127.0.0.1_{port}".encode()
    service = etcd_service([proxy.endpoint], path, port, checks=[])
    async with running_nerve(nerve_config({"web": service})) as daemon:
        reporter = daemon.services["web"].reporter
        assert isinstance(reporter, EtcdReporter)
        first = await until(lambda: client.get(key), what="the key")
        proxy.fail("504")
        await until(lambda: reporter.keeper.lease_id is None, 2 * LEASE_TTL, "the lease given up")
        await until(lambda: not reporter.registered and reporter.last_error, 2 * LEASE_TTL,
                    "an honest status")  # fmt: skip
        await until(lambda: gone(client, key), LEASE_TTL, "etcd to drop the key too")
        assert "HTTP 504" in (reporter.last_error or "")
        proxy.mode = "pass"
        again = await until(lambda: client.get(key), 3 * LEASE_TTL, "the key on a new lease")
        assert again.lease != first.lease
        await until(lambda: reporter.registered and reporter.last_error is None, what="registered")


async def gone(client: aetcd.Client, key: bytes) -> bool:
    return await client.get(key) is None
