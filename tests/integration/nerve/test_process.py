"""nerve as a real process (`.venv/bin/nerve -c FILE`): signals, crashes, reloads, the CLI."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aetcd
from kazoo.client import KazooClient
from nerve_testlib import (
    LEASE_TTL,
    NERVE_BIN,
    ZK_SESSION,
    NerveProcess,
    admin_get,
    admin_ready,
    children,
    etcd_service,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from testbed.etcd import EtcdCluster
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

StartNerve = Callable[[Path], NerveProcess]


def etcd_client(cluster: EtcdCluster) -> aetcd.Client:
    return aetcd.Client(host=cluster.host, port=cluster.port, timeout=2)


def both_registries_config(zk_hosts: str, cluster: EtcdCluster, path: str, **top) -> dict:
    port = free_port()  # no checks: always healthy
    return nerve_config(
        {
            "zk": zk_service(zk_hosts, path, port, checks=[]),
            "etcd": etcd_service(cluster.endpoints, path, port, checks=[]),
        },
        **top,
    )


async def registered_both(kz: KazooClient, client: aetcd.Client, path: str) -> list[str]:
    keys = await client.get_prefix(path.encode())
    nodes = [c for c in children(kz, path) if c.startswith("i-test_0")]
    return nodes if nodes and len(keys) == 1 else []


async def sigterm(nerve: NerveProcess) -> float:
    """SIGTERM; assert exit status 0; return how long the exit took."""
    sent = time.monotonic()
    nerve.signal(signal.SIGTERM)
    assert await asyncio.to_thread(nerve.wait, 10) == 0
    return time.monotonic() - sent


@asynccontextmanager
async def nerve_registered_in_both(
    zk: ZooKeeperServer, kz: KazooClient, etcd: EtcdCluster, tmp_path: Path, start: StartNerve
) -> AsyncIterator[tuple[NerveProcess, aetcd.Client, str, str]]:
    """A nerve process with one service in ZooKeeper and one in etcd, both registered:
    yields (process, etcd client, path, znode name)."""
    path = unique_path()
    nerve = start(
        write_config(tmp_path / "nerve.json", both_registries_config(zk.hosts, etcd, path))
    )
    async with etcd_client(etcd) as client:
        [node] = await until(lambda: registered_both(kz, client, path), what="registrations")
        yield nerve, client, path, node


async def test_sigterm_withdraws_everything_and_exits_0(
    zk: ZooKeeperServer, kz: KazooClient, etcd: EtcdCluster, tmp_path: Path, nerve_process
) -> None:
    async with nerve_registered_in_both(zk, kz, etcd, tmp_path, nerve_process) as registered:
        nerve, client, path, _ = registered
        assert await sigterm(nerve) < 5
        # At exit nothing is left: no waiting for a session timeout or a lease TTL.
        assert [c for c in children(kz, path) if c.startswith("i-test_")] == []
        assert len(await client.get_prefix(path.encode())) == 0
    assert "nerve_stopped" in nerve.log() and "failed=0" in nerve.log()


async def test_sigterm_exits_0_quickly_with_the_registries_down(
    tmp_path: Path, nerve_process
) -> None:
    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    try:
        path = unique_path()
        config = both_registries_config(server.hosts, cluster, path)
        nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
        nerve.wait_for_log("etcd_key_put")
        nerve.wait_for_log("znode_created")
        server.kill()
        cluster.kill_member(0)
        assert await sigterm(nerve) < 5
    finally:
        server.stop()
        cluster.stop()


async def test_kill_9_registration_goes_with_the_session_and_the_lease(
    zk: ZooKeeperServer, kz: KazooClient, etcd: EtcdCluster, tmp_path: Path, nerve_process
) -> None:
    async with nerve_registered_in_both(zk, kz, etcd, tmp_path, nerve_process) as registered:
        nerve, client, path, node = registered
        nerve.process.kill()  # SIGKILL: no goodbye
        killed = time.monotonic()
        # Still there right after the crash: only the session timeout / lease TTL end them.
        assert kz.exists(f"{path}/{node}") is not None
        assert len(await client.get_prefix(path.encode())) == 1

        await until(lambda: kz.exists(f"{path}/{node}") is None, what="the znode to expire")
        assert time.monotonic() - killed <= ZK_SESSION + 5  # (its tick, a loaded CI)
        await until(lambda: _no_keys(client, path), what="the etcd key to expire")
        assert time.monotonic() - killed <= LEASE_TTL + 5


async def _no_keys(client: aetcd.Client, path: str) -> bool:
    return len(await client.get_prefix(path.encode())) == 0


def node_of(kz: KazooClient, path: str) -> tuple[str, int] | None:
    nodes = children(kz, path)
    if len(nodes) != 1:
        return None
    return nodes[0], kz.get(f"{path}/{nodes[0]}")[1].czxid


async def test_sighup_keeps_unchanged_and_applies_changes(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    base = unique_path()
    heartbeat = tmp_path / "heartbeat"

    def svc(name: str, **extra) -> dict:
        return zk_service(zk.hosts, f"{base}/{name}", 7000 + len(name), **{"checks": [], **extra})

    exec_check = {"type": "exec", "command": "true", "timeout": 2}
    old = nerve_config(
        {
            "same": svc("same"),
            "checks": svc("checks", checks=[exec_check]),
            "changed": svc("changed", weight=1),
            "removed": svc("removed"),
        },
        heartbeat_path=str(heartbeat),
    )
    cfg = write_config(tmp_path / "nerve.json", old)
    nerve = nerve_process(cfg)
    names = ("same", "checks", "changed", "removed")
    before = await until(
        lambda: (
            all(node_of(kz, f"{base}/{n}") for n in names)
            and {n: node_of(kz, f"{base}/{n}") for n in names}
        ),
        what="four registrations",
    )
    stamp = await until(lambda: heartbeat.exists() and heartbeat.stat().st_mtime)
    await until(lambda: heartbeat.stat().st_mtime > stamp, what="the heartbeat to be touched")

    new = json.loads(json.dumps(old))
    new["services"]["checks"]["checks"] = [{**exec_check, "timeout": 3}]
    new["services"]["changed"]["weight"] = 2
    del new["services"]["removed"]
    new["services"]["added"] = svc("added")
    write_config(cfg, new)
    nerve.signal(signal.SIGHUP)

    await until(lambda: node_of(kz, f"{base}/added"), what="the added service")
    await until(lambda: not children(kz, f"{base}/removed"), what="the removed one withdrawn")
    # A changed record is written in place: the same znode, never withdrawn on the way.
    await until(
        lambda: json.loads(kz.get(f"{base}/changed/{before['changed'][0]}")[0])["weight"] == 2,
        what="the new weight",
    )
    assert node_of(kz, f"{base}/changed") == before["changed"]
    assert node_of(kz, f"{base}/same") == before["same"]  # untouched: same znode
    assert node_of(kz, f"{base}/checks") == before["checks"]  # only checks changed

    # An invalid file is rejected; the running config goes on.
    offset = len(nerve.log())
    cfg.write_text('{"instance_id": "i-test", "services": {"x": {"host": "h"}}}')
    nerve.signal(signal.SIGHUP)
    nerve.wait_for_log("config_rejected", after=offset)
    assert "services.x.port" in nerve.log()[offset:]
    assert nerve.process.alive
    assert node_of(kz, f"{base}/same") == before["same"]
    assert node_of(kz, f"{base}/added") is not None


def nerve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(NERVE_BIN), *args], capture_output=True, text=True, timeout=30, check=False
    )


async def test_maintenance_cli_survives_a_restart(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path = unique_path()
    admin = free_port()
    config = nerve_config(
        {"web": zk_service(zk.hosts, path, free_port(), checks=[{"type": "noop"}])},
        admin={"port": admin},
    )
    cfg = write_config(tmp_path / "nerve.json", config)
    nerve = nerve_process(cfg)
    await until(lambda: children(kz, path), what="registration")

    result = await asyncio.to_thread(
        nerve_cli, "maint", "web", "--reason", "swap disk", "-c", str(cfg)
    )
    assert result.returncode == 0, result.stderr
    assert "web: in maintenance: swap disk; not registered" in result.stdout
    await until(lambda: not children(kz, path), timeout=5, what="withdrawal at once")
    assert (tmp_path / "nerve-state" / "web.json").exists()

    await sigterm(nerve)
    nerve = nerve_process(cfg)
    await until(lambda: admin_ready(admin), what="the admin API")
    await until(
        lambda: admin_get(admin, "/status")["services"]["web"]["rounds"] >= 3, what="3 rounds"
    )
    assert children(kz, path) == []  # still in maintenance after the restart

    url = f"http://127.0.0.1:{admin}"
    result = await asyncio.to_thread(nerve_cli, "up", "web", "--admin", url)
    assert result.returncode == 0, result.stderr
    await until(lambda: children(kz, path), what="registration after `nerve up`")

    result = await asyncio.to_thread(
        nerve_cli, "maint", "web", "--reason", "quick", "--for", "1s", "--admin", url
    )
    assert result.returncode == 0, result.stderr
    await until(lambda: not children(kz, path), what="withdrawal")
    await until(lambda: children(kz, path), what="the end of the 1s maintenance")

    unknown = await asyncio.to_thread(nerve_cli, "up", "nosuch", "-c", str(cfg))
    assert unknown.returncode == 1 and "unknown service 'nosuch'" in unknown.stderr

    status = admin_get(admin, "/status")["services"]["web"]
    assert status["registered"] is True
    assert status["registry"]["node"].startswith(f"{path}/i-test_")
    assert status["checks"][0]["last"]["ok"] is True
    metrics = admin_get(admin, "/metrics")
    for name in (
        'nerve_check_results_total{check="noop-127.0.0.1',
        "nerve_check_duration_seconds_bucket",
        'nerve_transitions_total{service="web",to="withdrawn"} 1.0',
        'nerve_registry_writes_total{op="register",registry="zookeeper",service="web"} 2.0',
        'nerve_service_registered{service="web"} 1.0',
    ):
        assert name in metrics, name


def test_cli_without_a_running_nerve_fails_with_one_line(tmp_path: Path) -> None:
    result = nerve_cli(
        "maint", "web", "--reason", "x", "--admin", f"http://127.0.0.1:{free_port()}"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the nerve admin API")
    bad = nerve_cli("maint", "web", "--reason", "x", "--for", "soon", "--admin", "http://x")
    assert bad.returncode == 2 and "is not a duration" in bad.stderr


def test_check_config_flag_still_works(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "nerve.json", nerve_config({"web": zk_service("127.0.0.1:2181", "/x", 80)})
    )
    result = nerve_cli("-c", str(cfg), "-k")
    assert result.returncode == 0 and "ok (1 services)" in result.stdout
