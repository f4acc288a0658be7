"""nerve's Docker mode against a private dockerd and a real ZooKeeper.

The DockerSource runs with the daemon's real parts (registries, HTTP session, metrics); the
registrations are read back from ZooKeeper with a separate kazoo client.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from dockertestlib import HEALTHY_FILE_CHECK, eventually, published_port, wait_health
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from nerve.docker_config import DockerModeConfig
from nerve.docker_source import DockerSource
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registries import Registries
from testbed.dockerd import DockerDaemon
from testbed.images import busybox_image
from testbed.process import ManagedProcess, free_port


@pytest.fixture
def kazoo(zk) -> Any:
    client = KazooClient(hosts=zk.hosts)
    client.start(timeout=20)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def base_path() -> str:
    return f"/docker-test/{uuid.uuid4().hex[:10]}"


def records(kazoo: KazooClient, path: str) -> list[dict[str, Any]]:
    """Every record under path/<service>/, as dicts with the znode's service added."""
    out = []
    try:
        services = kazoo.get_children(path)
    except NoNodeError:
        return []
    for service in services:
        for child in kazoo.get_children(f"{path}/{service}"):
            try:
                data, _ = kazoo.get(f"{path}/{service}/{child}")
            except NoNodeError:
                continue
            out.append({**json.loads(data), "service": service, "znode": child})
    return sorted(out, key=lambda r: (r["service"], r["name"]))


def addresses(kazoo: KazooClient, path: str) -> list[str]:
    return sorted(f"{r['service']} {r['host']}:{r['port']}" for r in records(kazoo, path))


async def wait_addresses(kazoo: KazooClient, path: str, wanted: list[str]) -> None:
    await eventually(lambda: addresses(kazoo, path) == sorted(wanted), 30,
                     f"{sorted(wanted)} in ZooKeeper")  # fmt: skip


class Source:
    """A DockerSource with its own registries, stopped (and withdrawn) by close()."""

    def __init__(self, dockerd, zk, path: str, state_dir: Path | None = None,
                 **overrides: Any) -> None:  # fmt: skip
        cfg = {
            "url": dockerd.base_url,
            "service_defaults": {"zk_hosts": [zk.hosts], "zk_path": f"{path}/{{service}}",
                                 "zk_session_timeout": 2.0, "check_interval": 0.2},
            **overrides,
        }  # fmt: skip
        self.metrics = NerveMetrics()
        self.registries = Registries(asyncio.get_running_loop(), self.metrics)
        self.source = DockerSource(
            DockerModeConfig.model_validate(cfg),
            instance_id="host1",
            registries=self.registries,
            metrics=self.metrics,
            store=MaintenanceStore(state_dir),
        )
        self.source.start()

    async def close(self, withdraw: bool = True) -> None:
        await self.source.stop(withdraw=withdraw)
        await self.registries.close()


@pytest.fixture
async def source_factory(dockerd, zk, base_path) -> AsyncIterator[Any]:
    sources: list[Source] = []

    def make(**overrides: Any) -> Source:
        sources.append(Source(dockerd, zk, base_path, **overrides))
        return sources[-1]

    yield make
    for source in sources:
        await source.close()


def labels(service: str, port: str = "80", **more: str) -> dict[str, str]:
    out = {"smartstack.service": service, "smartstack.port": port}
    out.update({f"smartstack.{k.replace('__', '.')}": v for k, v in more.items()})
    return out


async def test_labels_become_records_one_per_port(container_factory, source_factory, kazoo,
                                                  base_path):  # fmt: skip
    web = container_factory("nweb", labels=labels("web", check="http:/", zone="az1", weight="7"))
    multi = container_factory(
        "nmulti", labels=labels("multi", port="80,8080", check="none"),
        ports={"80/tcp": ("127.0.0.1", None), "8080/tcp": ("127.0.0.1", None)},
    )  # fmt: skip
    container_factory("nplain", labels={"unrelated": "yes"})
    source_factory()
    multi.reload()
    ports = {k: int(v[0]["HostPort"]) for k, v in multi.ports.items()}
    await wait_addresses(kazoo, base_path, [
        f"web 127.0.0.1:{published_port(web)}",
        f"multi 127.0.0.1:{ports['80/tcp']}",
        f"multi 127.0.0.1:{ports['8080/tcp']}",
    ])  # fmt: skip
    by_name = {r["name"]: r for r in records(kazoo, base_path)}
    assert set(by_name) == {"host1_nweb", "host1_nmulti_80", "host1_nmulti_8080"}
    assert by_name["host1_nweb"]["labels"] == {"zone": "az1"}
    assert by_name["host1_nweb"]["weight"] == 7


async def test_health_kill_and_restart(container_factory, source_factory, kazoo, base_path):
    web = container_factory("nhealth", labels=labels("api"), healthcheck=HEALTHY_FILE_CHECK)
    source_factory()
    wait_health(web, "healthy")
    await wait_addresses(kazoo, base_path, [f"api 127.0.0.1:{published_port(web)}"])
    web.exec_run(["rm", "/www/healthy"])  # HEALTHCHECK fails: withdrawn
    await wait_addresses(kazoo, base_path, [])
    web.exec_run(["touch", "/www/healthy"])
    await wait_addresses(kazoo, base_path, [f"api 127.0.0.1:{published_port(web)}"])
    web.kill()  # SIGKILL
    await wait_addresses(kazoo, base_path, [])
    web.start()  # a new published port: the new address, and only it
    wait_health(web, "healthy")
    await wait_addresses(kazoo, base_path, [f"api 127.0.0.1:{published_port(web)}"])
    web.stop(timeout=5)
    await wait_addresses(kazoo, base_path, [])


async def test_failing_label_check_and_bad_labels(container_factory, source_factory, kazoo,
                                                  base_path):  # fmt: skip
    bad = container_factory("nbad", labels=labels("bad", port="eighty"))
    container_factory("ndown", labels=labels("down", check="http:/missing"))
    good = container_factory("ngood", labels=labels("good"))
    source = source_factory().source
    await wait_addresses(kazoo, base_path, [f"good 127.0.0.1:{published_port(good)}"])
    await eventually(lambda: source.status()["invalid_labels"], what="the label error")
    assert source.status()["invalid_labels"] == {
        bad.id: "smartstack.port='eighty': expected port numbers like 80 or 80,8080"
    }
    await eventually(lambda: source.services["down@ndown:80"].rounds >= 3, what="check rounds")
    assert source.status()["services"]["down@ndown:80"]["registered"] is False  # 404: not up
    assert addresses(kazoo, base_path) == [f"good 127.0.0.1:{published_port(good)}"]


async def test_restarted_nerve_leaves_one_record(container_factory, source_factory, kazoo,
                                                 base_path):  # fmt: skip
    web = container_factory("nkeep", labels=labels("keep"))
    wanted = [f"keep 127.0.0.1:{published_port(web)}"]
    first = source_factory()
    await wait_addresses(kazoo, base_path, wanted)
    [old] = [r["znode"] for r in records(kazoo, base_path)]
    # A crash: nerve's session stays open (as after SIGKILL, until it times out)...
    await first.source.stop(withdraw=False)
    assert addresses(kazoo, base_path) == wanted
    # ...and the restarted nerve (same instance id) replaces the leftover: one record. Its new
    # znode is written before the leftover goes (make before break), so wait for the old to go.
    source_factory()

    def replaced() -> bool:
        znodes = [r["znode"] for r in records(kazoo, base_path)]
        return bool(znodes) and old not in znodes

    await eventually(replaced, what="the leftover replaced by the new znode")
    assert addresses(kazoo, base_path) == wanted
    await first.registries.close()  # the old session ends: the new record stays
    await wait_addresses(kazoo, base_path, wanted)
    assert old not in [r["znode"] for r in records(kazoo, base_path)]


async def test_nerve_process_sigkill_and_restart(container_factory, zk, kazoo, base_path,
                                                 dockerd, tmp_path):  # fmt: skip
    """The real `nerve` command in docker mode: SIGKILLed while containers keep running (and
    one of them dies meanwhile), then restarted: no stale and no duplicate registration."""
    stays = container_factory("pstays", labels=labels("proc"))
    dies = container_factory("pdies", labels=labels("proc"))
    path = nerve_config(dockerd, zk, base_path, tmp_path, services={}, admin={"port": None})
    both = [f"proc 127.0.0.1:{published_port(c)}" for c in (stays, dies)]
    first = ManagedProcess([NERVE, "-c", str(path)], tmp_path, "nerve1").start()
    try:
        await wait_addresses(kazoo, base_path, both)
        first.kill()  # SIGKILL: no withdrawal, the session lives on for up to 2 s
        dies.kill()  # ...and a container dies while no nerve watches
        second = ManagedProcess([NERVE, "-c", str(path)], tmp_path, "nerve2").start()
        try:
            await wait_addresses(kazoo, base_path, [f"proc 127.0.0.1:{published_port(stays)}"])
            assert len(records(kazoo, base_path)) == 1
            second.stop(timeout=10)  # SIGTERM: withdraws before exiting
            assert second.returncode == 0, second.log_tail()
            assert records(kazoo, base_path) == []
        finally:
            second.kill()
    finally:
        first.kill()


async def test_nerve_maint_and_health_name_a_container_s_service(
    container_factory, zk, kazoo, base_path, dockerd, tmp_path
) -> None:
    """Docker mode: `nerve maint` / `nerve up` and GET /health/{service} reach a container's
    service (``web@app:80``), and the shutdown counts its withdrawal."""
    app = container_factory("mapp", labels=labels("mweb", check="none"))
    admin = free_port()
    path = nerve_config(dockerd, zk, base_path, tmp_path, admin={"port": admin})
    wanted = [f"mweb 127.0.0.1:{published_port(app)}"]
    url = f"http://127.0.0.1:{admin}"
    nerve = ManagedProcess([NERVE, "-c", str(path)], tmp_path, "nerve").start()
    try:
        await wait_addresses(kazoo, base_path, wanted)
        maint = await asyncio.to_thread(cli, url, "maint", "mweb@mapp:80", "--reason", "drain",
                                        "--drain", "0.2")  # fmt: skip
        assert maint.returncode == 0, maint.stderr
        assert addresses(kazoo, base_path) == []
        health = await asyncio.to_thread(http_status, f"{url}/health/mweb@mapp:80")
        assert health[0] == 503 and json.loads(health[1])["state"] == "maintenance"
        up = await asyncio.to_thread(cli, url, "up", "mweb@mapp:80")
        assert up.returncode == 0, up.stderr
        await wait_addresses(kazoo, base_path, wanted)
        nerve.stop(timeout=10)  # SIGTERM: withdraws before exiting
        assert nerve.returncode == 0 and records(kazoo, base_path) == []
        assert "event=nerve_stopped withdrawn=1 failed=0" in nerve.log_tail(), nerve.log_tail()
    finally:
        nerve.kill()


async def test_a_drained_container_recreated_under_its_name_is_registered_again(
    container_factory, zk, kazoo, base_path, dockerd, tmp_path
) -> None:
    """A rolling redeploy: `nerve maint --drain`, then the container is removed and a new one
    started under the same name. The maintenance was the old container's: the new one is
    registered. `docker restart` (the same container) keeps the operator's maintenance."""
    old = container_factory("rapp", labels=labels("rweb", check="none"))
    admin = free_port()
    state = tmp_path / "state"
    path = nerve_config(dockerd, zk, base_path, tmp_path, admin={"port": admin},
                        state_dir=str(state))  # fmt: skip
    url = f"http://127.0.0.1:{admin}"
    nerve = ManagedProcess([NERVE, "-c", str(path)], tmp_path, "nerve").start()
    try:
        await wait_addresses(kazoo, base_path, [f"rweb 127.0.0.1:{published_port(old)}"])
        maint = await asyncio.to_thread(cli, url, "maint", "rweb@rapp:80", "--reason",
                                        "redeploy", "--drain", "0.2")  # fmt: skip
        assert maint.returncode == 0, maint.stderr
        assert addresses(kazoo, base_path) == [] and list(state.glob("*.json")) != []
        old.stop(timeout=1)
        old.remove()
        await eventually(lambda: list(state.glob("*.json")) == [], 10, "the flag removed")
        new = container_factory("rapp", labels=labels("rweb", check="none"))
        wanted = [f"rweb 127.0.0.1:{published_port(new)}"]
        await wait_addresses(kazoo, base_path, wanted)
        assert "event=maintenance_dropped service=rweb@rapp:80 container=" in nerve.log_tail(200)
        maint = await asyncio.to_thread(cli, url, "maint", "rweb@rapp:80", "--reason", "disk")
        assert maint.returncode == 0, maint.stderr
        await wait_addresses(kazoo, base_path, [])
        new.restart(timeout=1)  # the same container: still the operator's maintenance
        added = "event=docker_service_added service=rweb@rapp:80 "
        await eventually(lambda: nerve.log_tail(500).count(added) == 3, 10,
                         "the restarted container's service added again")  # fmt: skip
        await asyncio.sleep(1.0)  # (5 check rounds)
        assert addresses(kazoo, base_path) == []
        flag = json.loads(next(state.glob("*.json")).read_text())  # (beside the *.lock)
        assert (flag["reason"], flag["container"]) == ("disk", new.id)
    finally:
        nerve.kill()


async def test_a_nerve_restarted_while_dockerd_is_down_registers_only_what_dockerd_lists(
    zk: Any, kazoo: Any, base_path: str, tmp_path: Path
) -> None:
    """dockerd stopped with live-restore (the container runs on), nerve crashes and starts
    again meanwhile: it registers nothing until dockerd's first listing confirms the container
    (what it knew before may be gone, its address another service's), then registers it.
    (Container addresses: docker-proxy dies with dockerd.)"""
    workdir = Path(tempfile.mkdtemp(prefix="smst-nrst-"))
    daemon = DockerDaemon(workdir, extra_args=["--live-restore"]).start()
    client = daemon.client()
    made: list[Source] = []
    try:
        client.networks.create("rstnet")
        app = client.containers.run(busybox_image(client), detach=True, name="rapp",
                                    network="rstnet", labels=labels("rst"))  # fmt: skip
        app.reload()
        wanted = [f"rst {app.attrs['NetworkSettings']['Networks']['rstnet']['IPAddress']}:80"]
        made.append(Source(daemon, zk, base_path, tmp_path, address="container"))
        await wait_addresses(kazoo, base_path, wanted)

        client.close()
        daemon.stop_daemon_only()
        await made[0].source.stop(withdraw=False)  # a crash: its session lives on (2 s)...
        made.append(Source(daemon, zk, base_path, tmp_path, address="container"))  # ...restarted
        second = made[1].source
        await made[0].registries.close()  # the old session ends: its znode goes
        await asyncio.sleep(3)
        assert second.services == {}
        assert addresses(kazoo, base_path) == []  # nothing written before dockerd answers
        assert second.watch is not None and second.watch.resyncs == 0  # dockerd still down
        assert sorted(p.name for p in tmp_path.iterdir()) == []  # no containers file

        daemon.start()  # back: its first listing registers what runs
        client = daemon.client()
        await eventually(lambda: second.watch and second.watch.resyncs, 20, "the first listing")
        await wait_addresses(kazoo, base_path, wanted)
        assert made[1].metrics.registry.get_sample_value("nerve_docker_connected") == 1.0
    finally:
        for source in reversed(made):
            await source.close()
        client.close()
        daemon.stop()
        leftovers = daemon.leftovers()
        shutil.rmtree(workdir, ignore_errors=True)
        assert leftovers == []


NERVE = str(Path(sys.executable).parent / "nerve")


def nerve_config(dockerd: Any, zk: Any, base_path: str, tmp_path: Path, **more: Any) -> Path:
    """A Docker-mode nerve config file (ZooKeeper under base_path); ``more``: top-level keys."""
    config = {
        "instance_id": "host1",
        **more,
        "docker": {"url": dockerd.base_url, "service_defaults": {
            "zk_hosts": [zk.hosts], "zk_path": f"{base_path}/{{service}}",
            "zk_session_timeout": 2.0, "check_interval": 0.2}},
    }  # fmt: skip
    path = tmp_path / "nerve.json"
    path.write_text(json.dumps(config))
    return path


def cli(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The `nerve` command against the admin API at ``url``."""
    return subprocess.run([NERVE, *argv, "--admin", url],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def http_status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
