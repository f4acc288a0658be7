"""Issue 11, nerve side, on a real ZooKeeper: fixed-key nodes that already exist,
``ttl_seconds`` and ``check_mocked`` (Airbnb nerve's semantics)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kazoo.client import KazooClient
from nerve_testlib import (
    TIMEOUT,
    children,
    nerve_config,
    running_nerve,
    unique_path,
    until,
    zk_service,
)

from nerve.config import NerveConfig
from nerve.reporters.zookeeper import ZooKeeperReporter
from smartstack.record import Registration, encode
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

KEY = "i-test_"  # nerve's child name for non-sequential node types


def reporter(daemon, service: str) -> ZooKeeperReporter:
    found = daemon.services[service].reporter
    assert isinstance(found, ZooKeeperReporter)
    return found


async def test_persistent_key_left_by_a_crashed_run_is_overwritten(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    port = free_port()
    stale = json.dumps({"host": "127.0.0.1", "port": port, "name": "i-test", "weight": 1})
    kz.create(f"{path}/{KEY}", stale.encode(), makepath=True)  # the crashed run's node
    service = zk_service(zk.hosts, path, port, checks=[], node_type="persistent", weight=9)
    async with running_nerve(nerve_config({"web": service})) as daemon:
        want = encode(Registration("127.0.0.1", port, "i-test", weight=9))
        await until(lambda: kz.get(f"{path}/{KEY}")[0] == want, what="the data overwritten")
        await until(lambda: reporter(daemon, "web").registered, what="registered")
        assert children(kz, path) == [KEY]
        assert reporter(daemon, "web").last_error is None
    assert children(kz, path) == []  # withdrawn on stop, as any registration


async def test_ephemeral_key_of_another_session_is_taken_over(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    port = free_port()
    other = KazooClient(hosts=zk.hosts)  # a previous nerve whose session is still alive
    other.start(timeout=TIMEOUT)
    try:
        other.create(f"{path}/{KEY}", b'{"host":"10.9.9.9","port":1,"name":"i-test"}',
                     ephemeral=True, makepath=True)  # fmt: skip
        service = zk_service(zk.hosts, path, port, checks=[], node_type="ephemeral")
        async with running_nerve(nerve_config({"web": service})) as daemon:

            def ours() -> bool:
                client_id = reporter(daemon, "web").conn.client.client_id
                data, stat = kz.get(f"{path}/{KEY}")
                mine = client_id is not None and stat.ephemeralOwner == client_id[0]
                return mine and data == reporter(daemon, "web").data

            await until(ours, what="the node to belong to nerve's session")
            other.stop()  # the old session ends: nerve's registration must stay
            other.close()
            await asyncio.sleep(0.5)
            assert ours() and children(kz, path) == [KEY]
    finally:
        other.stop()
        other.close()


async def test_ttl_seconds_refreshes_a_persistent_node(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    base = unique_path()
    port = free_port()
    services = {
        "kept": zk_service(zk.hosts, f"{base}/per", port, checks=[], node_type="persistent",
                           ttl_seconds=0.3),
        "eph": zk_service(zk.hosts, f"{base}/eph", port, checks=[], node_type="ephemeral",
                          ttl_seconds=0.3),
    }  # fmt: skip
    async with running_nerve(nerve_config(services)) as daemon:
        [node] = await until(lambda: children(kz, f"{base}/per"), what="the persistent node")
        first = kz.get(f"{base}/per/{node}")[1]
        await until(lambda: kz.get(f"{base}/per/{node}")[1].version >= first.version + 2,
                    what="two refreshes")  # fmt: skip
        data, stat = kz.get(f"{base}/per/{node}")
        assert stat.mtime > first.mtime and data == reporter(daemon, "kept").data
        await until(lambda: reporter(daemon, "kept").renewals >= 2, what="renewals counted")
        # Ephemeral node types are not refreshed (as Ruby nerve): no write, version 0.
        [eph] = await until(lambda: children(kz, f"{base}/eph"), what="the ephemeral node")
        await asyncio.sleep(1.0)
        assert kz.get(f"{base}/eph/{eph}")[1].version == 0
        assert reporter(daemon, "eph").renewals == 0


async def test_ttl_seconds_recreates_a_node_deleted_behind_nerves_back(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    path = unique_path()
    service = zk_service(zk.hosts, path, free_port(), checks=[], node_type="persistent",
                         ttl_seconds=0.3)  # fmt: skip
    async with running_nerve(nerve_config({"web": service})):
        [node] = await until(lambda: children(kz, path), what="the node")
        kz.delete(f"{path}/{node}")
        await until(lambda: children(kz, path) == [KEY], what="the node to come back")


async def test_check_mocked_registers_without_running_the_checks(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    base = unique_path()
    port = free_port()  # nothing listens: the HTTP check would fail
    services = {
        "mocked": zk_service(zk.hosts, f"{base}/m", port, check_mocked=True),
        "real": zk_service(zk.hosts, f"{base}/r", port),
    }
    async with running_nerve(nerve_config(services)) as daemon:
        await until(lambda: children(kz, f"{base}/m"), what="the mocked service registered")
        real = daemon.services["real"]
        await until(lambda: real.rounds >= 3, what="three check rounds of the real service")
        assert children(kz, f"{base}/r") == []  # same check, not mocked: down
        assert [c.name for c in daemon.services["mocked"].checks] == ["check_mocked"]


def owned_by_nerve(kz: KazooClient, daemon, node: str) -> bool:
    """``node`` exists, with nerve's record, in the session of nerve's current reporter."""
    found = reporter(daemon, "web")
    client_id = found.conn.client.client_id
    stat = kz.exists(node)
    data = kz.get(node)[0] if stat is not None else None
    return client_id is not None and stat is not None and stat.ephemeralOwner == client_id[0] \
        and data == found.data  # fmt: skip


async def test_restart_with_a_fixed_name_leftover_of_our_record_keeps_the_node(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    """The previous run's node (same record, its session alive) is on the scan's leftover
    list and under the very name nerve takes over: nerve must not delete it afterwards."""
    path = unique_path()
    port = free_port()
    node = f"{path}/{KEY}"
    other = KazooClient(hosts=zk.hosts)  # the killed run's session, not expired yet
    other.start(timeout=TIMEOUT)
    try:
        record = encode(Registration("127.0.0.1", port, "i-test"))
        other.create(node, record, ephemeral=True, makepath=True)
        service = zk_service(zk.hosts, path, port, checks=[], node_type="ephemeral")
        async with running_nerve(nerve_config({"web": service})) as daemon:
            found = reporter(daemon, "web")
            await until(lambda: found.registered and found.in_sync, what="registered")
            assert owned_by_nerve(kz, daemon, node), children(kz, path)
            other.stop()  # the old session ends: nerve's node stays
            other.close()
            assert owned_by_nerve(kz, daemon, node) and children(kz, path) == [KEY]
    finally:
        other.stop()
        other.close()


async def test_sighup_onto_a_new_session_keeps_a_fixed_name_node(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    """zk_auth added: the new reporter has its own session; it takes the fixed name over
    from the old one and keeps it (the old reporter leaves it to its successor)."""
    path = unique_path()
    port = free_port()
    node = f"{path}/{KEY}"
    service = zk_service(zk.hosts, path, port, checks=[], node_type="ephemeral")
    async with running_nerve(nerve_config({"web": service})) as daemon:
        first = reporter(daemon, "web")
        await until(lambda: first.registered and first.in_sync, what="registered")
        auth = {"scheme": "digest", "credential": "nerve:s3cret", "acl": "open"}
        new = NerveConfig.model_validate(nerve_config({"web": {**service, "zk_auth": auth}}))
        assert (await daemon.reload(new))["re_registered"] == ["web"]
        assert reporter(daemon, "web").conn is not first.conn  # a session of its own
        await until(lambda: daemon._retiring == set(), what="the old reporter retired")
        await until(lambda: reporter(daemon, "web").in_sync, what="written")
        assert owned_by_nerve(kz, daemon, node) and reporter(daemon, "web").registered


async def test_a_fixed_name_taken_over_is_never_missing_for_a_reader(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    """The other session's node goes and nerve's comes in one transaction. A watcher of the
    name (synapse) reads again as soon as it hears of the delete: that read must find the
    name. (Deleted and created apart, the read raced nerve's create and lost, 3 runs of 3:
    the server out of HAProxy for a moment.)"""
    for attempt in range(6):
        stat, owner = await _take_over_watched(zk, kz)
        assert stat is not None, f"attempt {attempt}: the name was missing"
        assert stat.ephemeralOwner == owner


async def _take_over_watched(zk: ZooKeeperServer, kz: KazooClient) -> tuple[Any, int]:
    """nerve takes a fixed name over from a live session; what a read sent on the first
    watch event found, and nerve's session."""
    node = f"{unique_path()}/{KEY}"
    other = KazooClient(hosts=zk.hosts)  # a previous nerve whose session is alive
    other.start(timeout=TIMEOUT)
    try:
        other.create(node, b'{"host":"10.9.9.9","port":1,"name":"i-test"}',
                     ephemeral=True, makepath=True)  # fmt: skip
        reads: list[Any] = []
        kz.exists(node, watch=lambda _event: reads.append(kz.exists_async(node)))
        service = zk_service(zk.hosts, node.rsplit("/", 1)[0], free_port(), checks=[],
                             node_type="ephemeral")  # fmt: skip
        async with running_nerve(nerve_config({"web": service})) as daemon:
            found = reporter(daemon, "web")
            await until(lambda: found.registered and reads, what="the takeover")
            stat = await asyncio.to_thread(reads[0].get, True, TIMEOUT)
            return stat, found.conn.client.client_id[0]
    finally:
        other.stop()
        other.close()
