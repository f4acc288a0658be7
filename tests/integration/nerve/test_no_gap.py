"""A healthy registration never disappears on its way through a nerve restart (a previous
run's leftover, kill -9) or a SIGHUP that changes its record or registry: synapse would
take the server out of HAProxy meanwhile. In process, against real ZooKeeper and etcd."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aetcd
import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    children_seen,
    etcd_service,
    nerve_config,
    running_nerve,
    unique_path,
    until,
    zk_service,
)
from stall_witness import beating, held_for

from nerve.config import NerveConfig
from nerve.daemon import NerveDaemon
from smartstack.record import Registration, encode, etcd_key
from testbed.etcd import EtcdCluster
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

RISE, FALL, INTERVAL = 3, 3, 0.3
# The etcd restart cases on both of nerve's etcd transports (json: the gateway, the default).
TRANSPORTS = pytest.mark.parametrize("transport", ["json", "grpc"])


def ours(kz: KazooClient, path: str) -> list[str]:
    return sorted(c for c in kz.get_children(path) if c.startswith("i-test_"))


def http_check(**extra: object) -> list[dict]:
    return [{"type": "http", "uri": "/health", "timeout": 1, "rise": RISE, "fall": FALL, **extra}]


async def test_zk_restart_keeps_the_leftover_until_the_new_node_exists(
    zk: ZooKeeperServer, kz: KazooClient, http_backend_factory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nerve")
    backend = http_backend_factory()
    path = unique_path()
    record = encode(Registration("127.0.0.1", backend.port, "i-test"))
    # The previous run's node (kill -9: its session lives on until it times out).
    leftover = kz.create(f"{path}/i-test_", record, ephemeral=True, sequence=True, makepath=True)
    service = zk_service(zk.hosts, path, backend.port, check_interval=INTERVAL, checks=http_check())
    async with running_nerve(nerve_config({"web": service})):
        with children_seen(kz, path) as seen:
            await until(
                lambda: (n := ours(kz, path)) and f"{path}/{n[0]}" != leftover and n,
                what="the new node alone",
            )
    assert seen and all(any(c.startswith("i-test_") for c in nodes) for nodes in seen), seen
    # Create, then delete: nerve sends the delete once the create is answered, and ZooKeeper
    # runs one session's requests in order. (A one-shot watch may miss the moment both exist.)
    created = [r.message for r in caplog.records if r.name.startswith("nerve")]
    assert "znode_created" in created and "znode_leftover_deleted" in created, created
    assert created.index("znode_created") < created.index("znode_leftover_deleted"), created


@contextmanager
def hung_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a check waits for its timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as hung:
        yield hung.getsockname()[1]


def hung_check(timeout: float = 1.0) -> list[dict]:
    return http_check(timeout=timeout)  # each round lasts `timeout`: the first told apart


async def test_zk_restart_withdraws_the_leftover_after_the_first_failed_round(
    zk: ZooKeeperServer, kz: KazooClient
) -> None:
    """Nothing vouches for a leftover: the first round with a failed (timed-out) check
    withdraws it, not `fall` failures or `rise` rounds later."""
    path = unique_path()
    with hung_port() as port:
        record = encode(Registration("127.0.0.1", port, "i-test"))
        leftover = kz.create(f"{path}/i-test_", record, ephemeral=True, sequence=True,
                             makepath=True)  # fmt: skip
        service = zk_service(zk.hosts, path, port, check_interval=INTERVAL, checks=hung_check())
        async with running_nerve(nerve_config({"web": service})) as daemon:
            web = daemon.services["web"]
            assert web.rounds == 0 and kz.exists(leftover), "withdrawn before the checks"
            await until(lambda: not web.reporter.holding, what="the hold ended")
            assert web.rounds == 1  # decided by the first round (a round lasts 1 s)
            await until(lambda: not kz.exists(leftover), what="the leftover withdrawn")
            assert ours(kz, path) == []


async def etcd_key_of(client: aetcd.Client, key: bytes) -> aetcd.rtypes.Get:
    kv = await client.get(key)
    assert kv is not None
    return kv


@TRANSPORTS
async def test_etcd_restart_overwrites_the_leftover_key_without_deleting_it(
    etcd: EtcdCluster, http_backend_factory, transport: str
) -> None:
    backend = http_backend_factory()
    path = unique_path()
    registration = Registration("127.0.0.1", backend.port, "i-test")
    key = etcd_key(path, registration).encode()
    service = etcd_service(etcd.endpoints, path, backend.port, check_interval=INTERVAL,
                           checks=http_check(), etcd_transport=transport)  # fmt: skip
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        old_lease = await client.lease(30)  # the previous run's lease, not expired yet
        await client.put(key, encode(registration), lease=old_lease)
        created = (await etcd_key_of(client, key)).create_revision
        async with running_nerve(nerve_config({"web": service})):
            kv = await until(
                lambda: _on_other_lease(client, key, old_lease.id), what="the key on our lease"
            )
            # Never deleted in between: a delete and a new put would give a new create_revision.
            assert kv.create_revision == created


async def _on_other_lease(client: aetcd.Client, key: bytes, old: int) -> aetcd.rtypes.Get | None:
    kv = await client.get(key)
    return kv if kv is not None and kv.lease not in (0, old) else None


@TRANSPORTS
async def test_etcd_restart_deletes_the_leftover_key_after_the_first_failed_round(
    etcd: EtcdCluster, transport: str
) -> None:
    path = unique_path()
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        with hung_port() as port:
            registration = Registration("127.0.0.1", port, "i-test")
            key = etcd_key(path, registration).encode()
            service = etcd_service(etcd.endpoints, path, port, check_interval=INTERVAL,
                                   checks=hung_check(), etcd_transport=transport)  # fmt: skip
            await client.put(key, encode(registration), lease=await client.lease(30))
            async with running_nerve(nerve_config({"web": service})) as daemon:
                web = daemon.services["web"]
                assert web.rounds == 0 and await client.get(key) is not None
                await until(lambda: not web.reporter.holding, what="the hold ended")
                assert web.rounds == 1  # decided by the first failed round
                await until(lambda: _gone(client, key), what="the leftover key deleted")


async def _gone(client: aetcd.Client, key: bytes) -> bool:
    return await client.get(key) is None


OLD_TTL = 2  # seconds: the previous run's lease (the suite's etcd_lease_ttl)


async def _dead_runs_key(
    client: aetcd.Client, key: bytes, value: bytes, left: float = 1.4
) -> tuple[int, int, float]:
    """A previous run's key on its lease, whose owner died (kill -9): nobody renews it. Returns
    once the lease has ``left`` seconds left (the in-process restart's time to find and hold
    it on a loaded 2-core machine, through a ~1 s stall of this process, nerve's too: 0.6 s
    was not, flake hunt s39; rise 5 x 0.5 s, ~2 s, still passes after it would have expired):
    (lease id, the key's create_revision, when it expires)."""
    lease = await client.lease(OLD_TTL)
    expires = time.monotonic() + OLD_TTL  # granted before this: expires by then at the latest
    await client.put(key, value, lease=lease)
    created = (await etcd_key_of(client, key)).create_revision
    await asyncio.sleep(expires - left - time.monotonic())  # the restart took that long
    return lease.id, created, expires


async def _lease_expired(client: aetcd.Client, lease_id: int) -> bool:
    return (await client.get_lease_info(lease_id)).TTL == -1


@TRANSPORTS
async def test_etcd_restart_keeps_the_leftover_s_lease_alive_until_rise_passes(
    etcd: EtcdCluster, http_backend_factory, transport: str
) -> None:
    """The dead run's lease would expire 1.4 s after the start, before rise 5 x 0.5 s passes:
    the restarted nerve renews it meanwhile, then puts the very same key on its own lease."""
    backend = http_backend_factory()
    path = unique_path()
    registration = Registration("127.0.0.1", backend.port, "i-test")
    key = etcd_key(path, registration).encode()
    service = etcd_service(etcd.endpoints, path, backend.port, check_interval=0.5,
                           checks=http_check(rise=5), etcd_transport=transport)  # fmt: skip
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        old, created, expires = await _dead_runs_key(client, key, encode(registration))
        async with running_nerve(nerve_config({"web": service})):
            kv = await until(lambda: _on_other_lease(client, key, old), what="the key on our lease")
            assert time.monotonic() > expires  # the old lease would have expired by now
            # Never deleted in between: a delete and a new put would give a new create_revision.
            assert kv.create_revision == created
            # Decided: the old lease is no longer renewed (a TTL after its last renewal).
            await until(lambda: _lease_expired(client, old), OLD_TTL + 10, "old lease expired")
            assert (await etcd_key_of(client, key)).create_revision == created


@TRANSPORTS
async def test_etcd_restart_holds_a_leftover_written_with_label_values_as_text(
    etcd: EtcdCluster, http_backend_factory, transport: str
) -> None:
    """An upgrade: the previous nerve (before 4908bdc) wrote {"tier":"1"}, this one writes
    {"tier":1}, the same record to every reader. Not held, its lease expired before rise
    passed and the key was gone until then (review cr36-airbnb)."""
    backend = http_backend_factory()
    path = unique_path()
    registration = Registration("127.0.0.1", backend.port, "i-test", labels={"tier": 1})
    old_bytes = encode(Registration("127.0.0.1", backend.port, "i-test", labels={"tier": "1"}))
    key = etcd_key(path, registration).encode()
    service = etcd_service(etcd.endpoints, path, backend.port, check_interval=0.5,
                           checks=http_check(rise=5), etcd_transport=transport,
                           labels={"tier": 1})  # fmt: skip
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        old, created, expires = await _dead_runs_key(client, key, old_bytes)
        async with running_nerve(nerve_config({"web": service})):
            kv = await until(lambda: _on_other_lease(client, key, old), what="the key on our lease")
            assert time.monotonic() > expires  # the old lease would have expired by now
            assert kv.create_revision == created  # never deleted in between
            assert kv.value == encode(registration)


@TRANSPORTS
async def test_etcd_restart_renews_the_leftover_s_lease_only_until_the_checks_fail(
    etcd: EtcdCluster, transport: str
) -> None:
    """A check that hangs to its 3 s timeout: the dead run's lease is renewed past its TTL
    while the first round runs; that round's failure deletes the key and ends the renewal
    (nothing vouches for the leftover), and the old lease is left to expire."""
    path = unique_path()
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        with hung_port() as port:
            registration = Registration("127.0.0.1", port, "i-test")
            key = etcd_key(path, registration).encode()
            service = etcd_service(etcd.endpoints, path, port, check_interval=0.5,
                                   checks=hung_check(3.0), etcd_transport=transport)  # fmt: skip
            # 1.4 s left (0.6 s was short at load 20: the first renewal came too late), and
            # looked at 0.5 s past it, before the first round can end (3 s after the start).
            old, created, expires = await _dead_runs_key(
                client, key, encode(registration), left=1.4
            )
            async with running_nerve(nerve_config({"web": service})) as daemon:
                web = daemon.services["web"]
                assert web.rounds == 0  # the first round hangs for 3 s
                await until(lambda: time.monotonic() > expires + 0.5, what="past the old TTL")
                kv = await client.get(key)
                assert kv is not None, "the held key went with the old lease"
                assert (kv.create_revision, kv.lease) == (created, old)
                await until(lambda: not web.reporter.holding, what="the hold ended")
                assert web.rounds == 1  # decided by the first failed round
                await until(lambda: _gone(client, key), what="the leftover key deleted")
                assert daemon.registries._etcd and all(
                    k.leftovers is not None and k.leftovers.holders(old) == 0
                    for k in daemon.registries._etcd.values()
                )
                await until(lambda: _lease_expired(client, old), OLD_TTL + 10, "lease expired")


@TRANSPORTS
async def test_etcd_restart_leaves_a_lease_with_a_key_nobody_holds_to_expire(
    etcd: EtcdCluster, http_backend_factory, transport: str
) -> None:
    """The dead run's lease carries web's key (same record: held) and api's key at its old
    port (api moved between runs: nobody vouches for it). Renewing the lease would keep
    that dead address registered: the lease expires on time, with both keys."""
    backend = http_backend_factory()
    path = unique_path()
    web = Registration("127.0.0.1", backend.port, "i-test")
    old_api = Registration("127.0.0.1", free_port(), "i-test")
    slow = {"check_interval": 1.0, "checks": http_check(rise=5), "etcd_transport": transport}
    config = nerve_config({  # web would hold for 5 x 1 s
        "web": etcd_service(etcd.endpoints, path, backend.port, **slow),
        "api": etcd_service(etcd.endpoints, path, free_port(), **slow),
    })  # fmt: skip
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=2) as client:
        lease = await client.lease(OLD_TTL)
        expires = time.monotonic() + OLD_TTL
        await client.put(etcd_key(path, web).encode(), encode(web), lease=lease)
        await client.put(etcd_key(path, old_api).encode(), encode(old_api), lease=lease)
        async with running_nerve(config) as daemon:
            with beating() as held:  # (a stall of this loaded process holds the look, not etcd)
                await until(lambda: _lease_expired(client, lease.id), OLD_TTL + 10, "expired")
                seen = time.monotonic()
            # etcd's expiry lags up to ~0.5 s; renewed, it would be a TTL or more later
            assert seen - held_for(held, expires, seen) < expires + 1.5, (seen - expires, held)
            assert daemon.services["web"].rounds < 5  # web still undecided: no renewal for it
            assert await client.get(etcd_key(path, old_api).encode()) is None


def _reloaded(config: dict, **changes: object) -> NerveConfig:
    new = json.loads(json.dumps(config))
    new["services"]["web"].update(changes)
    return NerveConfig.model_validate(new)


async def _reload(daemon: NerveDaemon, config: NerveConfig) -> None:
    summary = await daemon.reload(config)
    assert summary["re_registered"] == ["web"]


@pytest.mark.parametrize(
    "encoded, change",
    [
        (False, {"weight": 20}),  # the data set in place: the very same node
        (True, {"weight": 20}),  # the name encodes the record: new node first, then the old goes
        (False, {"zk_session_timeout": 3.0}),  # registry settings: a new reporter takes over
    ],
)
async def test_zk_sighup_changing_the_record_or_registry_never_drops_the_server(
    zk: ZooKeeperServer, kz: KazooClient, encoded: bool, change: dict
) -> None:
    path = unique_path()
    service = zk_service(zk.hosts, path, free_port(), checks=[], weight=10,
                         use_path_encoding=encoded)  # fmt: skip
    config = nerve_config({"web": service})
    async with running_nerve(config) as daemon:
        [before] = await until(lambda: kz.get_children(path), what="registration")
        with children_seen(kz, path) as seen:
            await _reload(daemon, _reloaded(config, **change))
            weight = change.get("weight", 10)
            await until(lambda: daemon._retiring == set(), what="the old reporter retired")
            await until(lambda: daemon.services["web"].reporter.in_sync, what="written")
            [after] = kz.get_children(path)
            assert json.loads(kz.get(f"{path}/{after}")[0])["weight"] == weight
        assert all(seen), seen  # never a list without the server
        if not encoded:
            assert after == before  # the same node: nothing for synapse to remove


# On either transport (the old reporter deletes its key only if unchanged: a transaction); a
# changed transport is changed registry settings: the other transport takes over.
@pytest.mark.parametrize(
    "transport, change",
    [
        ("json", {"weight": 20}),
        ("json", {"etcd_lease_ttl": 3}),
        ("grpc", {"etcd_lease_ttl": 3}),
        ("json", {"etcd_transport": "grpc"}),
        ("grpc", {"etcd_transport": "json"}),
    ],
)
async def test_etcd_sighup_changing_the_record_or_registry_never_deletes_the_key(
    etcd: EtcdCluster, transport: str, change: dict
) -> None:
    path = unique_path()
    port = free_port()
    service = etcd_service(etcd.endpoints, path, port, checks=[], weight=10,
                           etcd_transport=transport)  # fmt: skip
    config = nerve_config({"web": service})
    key = etcd_key(path, Registration("127.0.0.1", port, "i-test")).encode()
    client = aetcd.Client(host=etcd.host, port=etcd.port, timeout=2)
    async with client, running_nerve(config) as daemon:
        first = await until(lambda: client.get(key), what="registration")
        await _reload(daemon, _reloaded(config, **change))
        weight = change.get("weight", 10)

        async def rewritten() -> aetcd.rtypes.Get | None:
            kv = await client.get(key)
            return kv if kv and kv.mod_revision != first.mod_revision else None

        kv = await until(rewritten, what="the key written again")
        await until(lambda: daemon._retiring == set(), what="the old reporter retired")
        reporter: Any = daemon.services["web"].reporter
        assert reporter.keeper.conn.transport == change.get("etcd_transport", transport)
        kv = await etcd_key_of(client, key)
        assert json.loads(kv.value)["weight"] == weight
        assert kv.create_revision == first.create_revision  # never deleted in between
        assert (await client.get_lease_info(kv.lease)).TTL > 0


@pytest.mark.parametrize("node_type", ["ephemeral_sequential", "persistent"])
async def test_zk_sighup_changing_the_instance_id_renames_the_node(
    zk: ZooKeeperServer, kz: KazooClient, node_type: str
) -> None:
    """The node's name carries the instance id: i-b's record under the name i-a_ would
    never be recognised as ours again (a restarted nerve as i-b leaves it; a persistent one
    stays forever). The i-b node is created first, then the i-a one deleted."""
    path = unique_path()
    service = zk_service(zk.hosts, path, free_port(), checks=[], node_type=node_type)
    config = nerve_config({"web": service}, instance_id="i-a")
    async with running_nerve(config) as daemon:
        await until(lambda: kz.get_children(path), what="registration")
        with children_seen(kz, path) as seen:
            renamed = NerveConfig.model_validate({**config, "instance_id": "i-b"})
            await _reload(daemon, renamed)
            await until(lambda: daemon.services["web"].reporter.in_sync, what="written")
            [after] = kz.get_children(path)
        assert after.startswith("i-b_"), after
        assert json.loads(kz.get(f"{path}/{after}")[0])["name"] == "i-b"
        assert all(seen), seen  # never a list without the server


async def test_zk_sighup_respelling_zk_hosts_never_drops_a_fixed_name_node(
    zk: ZooKeeperServer, kz: KazooClient, caplog: pytest.LogCaptureFixture
) -> None:
    """node_type ephemeral, a new session (zk_hosts respelled): the new reporter's node
    replaces the old session's under the same name; the old reporter, being replaced, must
    neither take it back (registration_vanished) nor delete it on retiring. Three reloads:
    on the old code one reload lost that race about 2 times in 3."""
    caplog.set_level(logging.INFO, logger="nerve")
    path = unique_path()
    service = zk_service(zk.hosts, path, free_port(), checks=[], node_type="ephemeral")
    config = nerve_config({"web": service})
    respelled = zk.hosts.replace("127.0.0.1", "localhost").split(",")
    async with running_nerve(config) as daemon:
        await until(lambda: kz.get_children(path), what="registration")
        with children_seen(kz, path) as seen:
            for hosts in (respelled, zk.hosts.split(","), respelled):
                await _reload(daemon, _reloaded(config, zk_hosts=hosts))
                await until(lambda: daemon._retiring == set(), what="the old reporter retired")
                reporter: Any = daemon.services["web"].reporter
                await until(lambda r=reporter: r.in_sync, what="written")
                stat = kz.exists(f"{path}/i-test_")
                assert stat is not None and stat.czxid == reporter.czxid  # the new one's node
        assert all(seen), seen  # never a list without the server
    assert "registration_vanished" not in [r.message for r in caplog.records]
