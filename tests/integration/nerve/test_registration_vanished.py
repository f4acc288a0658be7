"""nerve's registration deleted by another client while its ZooKeeper session or etcd lease
lives on: written again, once (Ruby nerve's ``ping?``). Its own withdrawal is not taken
for a disappearance. Real ZooKeeper and etcd, nerve in process."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aetcd
import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    children,
    etcd_service,
    nerve_config,
    running_nerve,
    unique_path,
    until,
    zk_service,
)

from nerve.daemon import NerveDaemon
from nerve.reporters.etcd import AUDIT_INTERVAL
from nerve.reporters.zookeeper import ZooKeeperReporter
from nerve.service import Service
from testbed.etcd import EtcdCluster
from testbed.httpbackend import HttpBackend
from testbed.zookeeper import ZooKeeperServer, four_letter_word

SETTLE = 1.5  # seconds watched for a registration that should not come back, or a second one
FLAPS = 20  # withdraw-register rounds; the old code leaked a watch in most of them


def vanished(daemon: NerveDaemon, registry: str) -> float:
    labels = {"service": "web", "registry": registry}
    value = daemon.metrics.registry.get_sample_value("nerve_registration_vanished_total", labels)
    return value or 0.0


async def withdrawn_by(trigger: str, service: Service, backend: HttpBackend) -> None:
    """Make the service withdraw: returns once it has decided (``desired`` is False)."""
    if trigger == "maintenance":
        service.enter_maintenance("test")
    else:
        backend.stop()
        await until(lambda: not service.reporter.desired, what="the unhealthy decision")


async def steady(sample: Callable[[], object], seconds: float) -> list[object]:
    """Samples of ``sample()`` (sync or async) over ``seconds``: what a consumer saw."""
    seen: list[object] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = sample()
        seen.append(await value if inspect.isawaitable(value) else value)
        await asyncio.sleep(0.05)
    return seen


# --------------------------------------------------------------------------- ZooKeeper


@pytest.mark.parametrize("node_type", ["ephemeral_sequential", "ephemeral", "persistent"])
async def test_a_znode_deleted_by_another_client_is_created_again_once(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, node_type: str
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    service = zk_service(zk.hosts, path, backend.port, node_type=node_type)
    async with running_nerve(nerve_config({"web": service})) as daemon:
        reporter = daemon.services["web"].reporter
        (first,) = await until(lambda: children(kz, path), what="the registration")
        await until(lambda: reporter.in_sync)
        session = kz.get(f"{path}/{first}")[1].ephemeralOwner

        await asyncio.to_thread(kz.delete, f"{path}/{first}")
        deleted = time.monotonic()
        (again,) = await until(lambda: children(kz, path), timeout=3, what="a new node")
        print(f"{node_type}: created again after {time.monotonic() - deleted:.3f}s")
        assert vanished(daemon, "zookeeper") == 1
        assert kz.get(f"{path}/{again}")[1].ephemeralOwner == session  # the session lived on
        if node_type == "ephemeral_sequential":
            assert again != first
        # Exactly one, and it stays: no second node, no further disappearance.
        seen = await steady(lambda: children(kz, path), SETTLE)
        assert all(kids == [again] for kids in seen), seen
        assert vanished(daemon, "zookeeper") == 1
        assert reporter.registered and reporter.node == f"{path}/{again}"

        # And again: the watch was armed anew on the new node.
        await asyncio.to_thread(kz.delete, f"{path}/{again}")
        await until(lambda: children(kz, path), timeout=3, what="a third node")
        assert vanished(daemon, "zookeeper") == 2


@asynccontextmanager
async def registered_on_zk(
    zk: ZooKeeperServer, kz: KazooClient, backend: HttpBackend
) -> AsyncIterator[tuple[NerveDaemon, str]]:
    """nerve running, its ephemeral_sequential node written, the reporter idle: (daemon, path)."""
    path = unique_path()
    service = zk_service(zk.hosts, path, backend.port)
    async with running_nerve(nerve_config({"web": service})) as daemon:
        await until(lambda: children(kz, path), what="the registration")
        await until(lambda: daemon.services["web"].reporter.in_sync)
        yield daemon, path


@pytest.mark.parametrize("trigger", ["maintenance", "unhealthy"])
async def test_a_znode_deletion_racing_the_withdrawal_registers_nothing(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, trigger: str
) -> None:
    backend = http_backend_factory()
    async with registered_on_zk(zk, kz, backend) as (daemon, path):
        service = daemon.services["web"]
        (node,) = children(kz, path)

        await withdrawn_by(trigger, service, backend)
        kz.delete_async(f"{path}/{node}")  # racing nerve's own delete, in the same moment
        await until(lambda: service.reporter.in_sync and not children(kz, path))
        seen = await steady(lambda: children(kz, path), SETTLE)
        assert seen and all(kids == [] for kids in seen), seen
        assert not service.reporter.registered
        assert vanished(daemon, "zookeeper") == 0  # our own withdrawal is no disappearance


def watched_under(zk: ZooKeeperServer, path: str) -> list[str]:
    """The paths below ``path`` the server holds watches on (``wchp``: path, then sessions)."""
    listing = four_letter_word(zk.port, "wchp").splitlines()
    return sorted(line for line in listing if line.startswith(f"{path}/"))


async def test_withdrawals_and_outside_deletes_leave_one_watch_on_the_current_node(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory
) -> None:
    """Each deletion of the node (nerve's own withdrawal, another client's delete) fires its
    watch, and the look that follows finds the name gone: it must not leave a watch on
    it, on the server or in kazoo (a sequential name never comes back)."""
    async with registered_on_zk(zk, kz, http_backend_factory()) as (daemon, path):
        service = daemon.services["web"]
        reporter = service.reporter
        assert isinstance(reporter, ZooKeeperReporter)
        for _ in range(FLAPS):
            service.enter_maintenance("test")
            await until(lambda: reporter.in_sync and not children(kz, path), what="withdrawn")
            service.leave_maintenance()
            await until(lambda: reporter.in_sync and children(kz, path), what="registered")
        for _ in range(3):
            node = reporter.node
            await asyncio.to_thread(kz.delete, node)
            await until(lambda gone=node: reporter.in_sync and reporter.node not in (None, gone))
        await until(lambda: not reporter._looks, what="the last looks")
        assert watched_under(zk, path) == [reporter.node]
        kazoo_watched = [p for p in reporter.conn.client._data_watchers if p.startswith(path)]
        assert kazoo_watched == [reporter.node]


# --------------------------------------------------------------------------- etcd


@pytest.fixture
async def etcd_client(etcd: EtcdCluster) -> AsyncIterator[aetcd.Client]:
    host, port = etcd.endpoints[0].rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=2) as client:
        yield client


@asynccontextmanager
async def registered_on_etcd(
    etcd: EtcdCluster, client: aetcd.Client, backend: HttpBackend, **extra: Any
) -> AsyncIterator[tuple[NerveDaemon, bytes, Any]]:
    """nerve running, its key written and the reporter idle: (daemon, key, the key's kv)."""
    path = unique_path()
    key = f"{path}/i-test_127.0.0.1_{backend.port}".encode()
    service = etcd_service(etcd.endpoints, path, backend.port, **extra)
    async with running_nerve(nerve_config({"web": service})) as daemon:
        kv = await until(lambda: client.get(key), what="the key")
        await until(lambda: daemon.services["web"].reporter.in_sync)
        yield daemon, key, kv


@pytest.mark.parametrize("transport", ["json", "grpc"])
async def test_an_etcd_key_deleted_by_another_client_is_put_again_once(
    etcd: EtcdCluster, etcd_client: aetcd.Client, http_backend_factory, transport: str
) -> None:
    backend = http_backend_factory()
    async with registered_on_etcd(etcd, etcd_client, backend, etcd_transport=transport) as (
        daemon,
        key,
        kv,
    ):
        await etcd_client.delete(key)
        deleted = time.monotonic()
        again = await until(
            lambda: etcd_client.get(key), timeout=AUDIT_INTERVAL + 10, what="the key put again"
        )
        print(f"{transport}: put again after {time.monotonic() - deleted:.3f}s")
        assert again.lease == kv.lease and again.value == kv.value  # the lease lived on
        assert vanished(daemon, "etcd") == 1
        # (etcd holds the key once it has applied the put; the reporter marks itself
        # registered once the put's answer reaches it: a moment later, 1 run in 4 at load 24)
        reporter = daemon.services["web"].reporter
        await until(lambda: reporter.registered, timeout=5, what="the put's answer")
        # Exactly one key, staying; no further disappearance counted (reads go on every 3 s).
        await asyncio.sleep(AUDIT_INTERVAL)
        prefix = key.rpartition(b"/")[0]
        assert [k.key for k in await etcd_client.get_prefix(prefix)] == [key]
        assert vanished(daemon, "etcd") == 1


@pytest.mark.parametrize("trigger", ["maintenance", "unhealthy"])
async def test_an_etcd_key_deletion_racing_the_withdrawal_puts_nothing(
    etcd: EtcdCluster, etcd_client: aetcd.Client, http_backend_factory, trigger: str
) -> None:
    backend = http_backend_factory()
    async with registered_on_etcd(etcd, etcd_client, backend) as (daemon, key, _):
        service = daemon.services["web"]
        await withdrawn_by(trigger, service, backend)
        deleting = asyncio.ensure_future(etcd_client.delete(key))  # racing nerve's own delete
        await until(lambda: service.reporter.in_sync)
        await deleting
        # Longer than between two reads of the key: one would have found it missing.
        seen = await steady(lambda: etcd_client.get(key), AUDIT_INTERVAL + 0.5)
        assert seen and all(kv is None for kv in seen), seen
        assert not service.reporter.registered
        assert vanished(daemon, "etcd") == 0  # our own withdrawal is no disappearance


@pytest.mark.parametrize("node_type", ["ephemeral_sequential", "ephemeral"])
async def test_a_second_nerve_with_our_instance_id_takes_over_without_a_tug_of_war(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, node_type: str
) -> None:
    """A second nerve with the same instance id and record starts while the first still runs
    (as after a crash whose session lives on): it deletes the first's node as its leftover
    or, under a fixed name, replaces it. The first must not write it again (each would
    delete or replace the other's node in turn, ~35 transactions a second for ever)."""
    backend = http_backend_factory()
    path = unique_path()
    service = zk_service(zk.hosts, path, backend.port, node_type=node_type)
    async with running_nerve(nerve_config({"web": service})) as first:
        await until(lambda: children(kz, path), what="the registration")
        await until(lambda: first.services["web"].reporter.in_sync)
        old = kz.get(f"{path}/{children(kz, path)[0]}")[1].czxid
        async with running_nerve(nerve_config({"web": service})) as second:
            taken = second.services["web"].reporter
            await until(
                lambda: (
                    taken.in_sync
                    and taken.czxid not in (None, old)
                    and len(children(kz, path)) == 1
                ),
                what="taken, the leftover gone",
            )
            seen = await steady(
                lambda: [(kid, kz.get(f"{path}/{kid}")[1].czxid) for kid in children(kz, path)],
                SETTLE,
            )
            assert len(set(map(tuple, seen))) == 1 and len(seen[-1]) == 1, seen
            assert taken.node == f"{path}/{seen[-1][0][0]}"
            assert vanished(first, "zookeeper") == 0
            assert first.services["web"].reporter.node is None  # stood aside
