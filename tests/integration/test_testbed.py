"""The test harness itself against the real servers: ZooKeeper, etcd, HAProxy, HTTP backends."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import aetcd
import pytest
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

from testbed.etcd import EtcdCluster
from testbed.haproxy import (
    HAProxyProcess,
    haproxy_version,
)
from testbed.process import (
    free_port,
    process_gone,
    wait_processes_gone,
    wait_until,
)
from testbed.zookeeper import (
    ZooKeeperEnsemble,
    ZooKeeperServer,
    expire_session,
    wipe,
)

T = TypeVar("T")
TIMEOUT = 30.0  # generous: 2 shared cores, never a speed assertion


@pytest.fixture
def kazoo_factory() -> Iterator[Callable[[str], KazooClient]]:
    clients: list[KazooClient] = []

    def connect(hosts: str) -> KazooClient:
        client = KazooClient(hosts=hosts)
        clients.append(client)
        client.start(timeout=TIMEOUT)
        return client

    yield connect
    for client in clients:
        client.stop()
        client.close()


async def eventually(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """Retry an async operation until it returns something truthy (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await attempt()
            if result:
                return result
        except Exception as exc:  # etcd without a leader fails in several ways
            last = exc
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what} (last error: {last!r})")


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# --------------------------------------------------------------------------- process


def test_free_port_never_repeats() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)


# --------------------------------------------------------------------------- ZooKeeper


def test_zk_create_and_get(zk: ZooKeeperServer, kazoo_factory) -> None:
    client = kazoo_factory(zk.hosts)
    client.create("/harness/plain", b"value", makepath=True)
    assert client.get("/harness/plain")[0] == b"value"


def test_zk_wipe_empties_the_shared_server_past_acls_and_live_sessions(
    zk: ZooKeeperServer, kazoo_factory
) -> None:
    """The run's one ZooKeeper is emptied for each module: nodes only their creator may
    delete and another session's ephemeral nodes too, leaving /zookeeper."""
    owner = kazoo_factory(zk.hosts)
    owner.add_auth("digest", "owner:secret")
    only_owner = [make_digest_acl("owner", "secret", all=True)]
    owner.create("/locked/inner/leaf", b"x", makepath=True, acl=only_owner)
    owner.set_acls("/locked", only_owner)
    owner.create("/registered/eph-", b"x", ephemeral=True, sequence=True, makepath=True)

    wipe(zk.hosts)

    assert kazoo_factory(zk.hosts).get_children("/") == ["zookeeper"]


def test_zk_ephemeral_disappears_after_session_expiry(zk: ZooKeeperServer, kazoo_factory) -> None:
    owner, observer = kazoo_factory(zk.hosts), kazoo_factory(zk.hosts)
    path = owner.create("/harness/eph-", b"x", ephemeral=True, sequence=True, makepath=True)
    old_session = owner.client_id[0]

    expire_session(owner)

    wait_until(lambda: observer.exists(path) is None, TIMEOUT, what="ephemeral node to vanish")
    # kazoo comes back on its own, with a new session.
    wait_until(
        lambda: owner.connected and owner.client_id[0] != old_session,
        TIMEOUT,
        what="a new session",
    )


def test_zk_ensemble_survives_leader_kill(zk_ensemble: ZooKeeperEnsemble, kazoo_factory) -> None:
    client = kazoo_factory(zk_ensemble.hosts)
    path = client.create("/harness/eph", b"1", ephemeral=True, makepath=True)
    session = client.client_id[0]
    leader = zk_ensemble.leader_index()
    assert leader is not None
    leader_pid = zk_ensemble.members[leader].pid

    zk_ensemble.kill_member(leader)

    assert leader_pid is not None and process_gone(leader_pid)
    wait_until(lambda: client.set(path, b"2"), TIMEOUT, what="writes to resume")
    assert client.client_id[0] == session  # same session: the ephemeral node lived on
    assert client.get(path)[0] == b"2"
    new_leader = zk_ensemble.leader_index()
    assert new_leader is not None and new_leader != leader

    zk_ensemble.start_member(leader)  # rejoins with its data dir
    pids = zk_ensemble.pids
    zk_ensemble.stop()
    wait_processes_gone([p for p in pids if p is not None])


# --------------------------------------------------------------------------- etcd


async def test_etcd_put_get_and_lease_expiry(etcd: EtcdCluster) -> None:
    prefix = f"/harness/{uuid.uuid4().hex}".encode()
    async with aetcd.Client(host=etcd.host, port=etcd.port, timeout=5) as client:
        await client.put(prefix + b"/k", b"v")
        got = await client.get(prefix + b"/k")
        assert got is not None and got.value == b"v"

        lease = await client.lease(1)
        await client.put(prefix + b"/leased", b"x", lease=lease)
        assert await client.get(prefix + b"/leased") is not None

        async def gone() -> bool:
            return await client.get(prefix + b"/leased") is None

        await eventually(gone, "the leased key to expire")


async def test_etcd_cluster_survives_leader_kill(etcd_cluster: EtcdCluster) -> None:
    leader = wait_until(
        lambda: (i := etcd_cluster.leader_index()) is not None and [i], TIMEOUT, what="a leader"
    )[0]
    etcd_cluster.kill_member(leader)
    survivor = etcd_cluster.members[(leader + 1) % etcd_cluster.size]

    async with aetcd.Client(host="127.0.0.1", port=survivor.client_port, timeout=2) as client:

        async def write() -> bool:
            await client.put(b"/harness/after-kill", b"ok")
            return True

        await eventually(write, "writes to resume after the leader was killed")
        got = await client.get(b"/harness/after-kill")
        assert got is not None and got.value == b"ok"
    assert etcd_cluster.leader_index() not in (None, leader)

    pids = etcd_cluster.pids
    etcd_cluster.stop()
    wait_processes_gone([p for p in pids if p is not None])


# --------------------------------------------------------------------------- HTTP backends


def test_http_backend_health_and_restart(http_backend_factory) -> None:
    backend = http_backend_factory("alpha")
    assert http_get(backend.url) == (200, "alpha")
    assert http_get(backend.url + "health")[0] == 200
    backend.set_healthy(False)
    assert http_get(backend.url + "health")[0] == 503

    backend.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(backend.url, timeout=5)
    backend.start()
    assert http_get(backend.url) == (200, "alpha")


# --------------------------------------------------------------------------- HAProxy


def test_haproxy_version() -> None:
    assert haproxy_version() >= (2, 4, 0)


def _one_backend_config(frontend_port: int, server_address: str) -> str:
    return f"""
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend main
    bind 127.0.0.1:{frontend_port}
    default_backend web

backend web
    balance roundrobin
    server s1 {server_address}
"""


def test_haproxy_runtime_api_and_reload(haproxy_factory, http_backend_factory) -> None:
    backend = http_backend_factory("alpha")
    port = free_port()
    haproxy: HAProxyProcess = haproxy_factory(_one_backend_config(port, backend.address))
    url = f"http://127.0.0.1:{port}/"
    assert http_get(url) == (200, "alpha")

    (row,) = haproxy.show_servers_state("web")
    assert (row["be_name"], row["srv_name"], row["srv_addr"]) == ("web", "s1", "127.0.0.1")
    assert row["srv_port"] == backend.port
    assert row["srv_admin_state"] == 0

    assert haproxy.runtime("set server web/s1 state maint").strip() == ""
    (row,) = haproxy.show_servers_state("web")
    assert row["srv_admin_state"] & 0x01  # forced maintenance
    assert http_get(url)[0] == 503

    old_workers = haproxy.worker_pids()
    new_workers = haproxy.reload()
    assert new_workers and not set(new_workers) & set(old_workers)
    wait_processes_gone(old_workers)
    # A reload starts from the config: the runtime maint state is gone (no state file here).
    assert http_get(url) == (200, "alpha")

    pids = [haproxy.pid, *new_workers]
    haproxy.stop()
    wait_processes_gone(pids)
