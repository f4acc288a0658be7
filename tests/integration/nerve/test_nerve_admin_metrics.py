"""nerve as a real process: a taken admin port is one log line; /metrics says which build."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from kazoo.client import KazooClient
from nerve_testlib import (
    admin_get,
    admin_ready,
    children,
    nerve_config,
    unique_path,
    until,
    write_config,
    zk_service,
)

from smartstack.build_info import version
from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def noop_service(zk: ZooKeeperServer, path: str) -> dict:
    return zk_service(zk.hosts, path, free_port(), checks=[{"type": "noop"}])


async def test_a_taken_admin_port_is_one_line_and_nerve_keeps_registering(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path = unique_path()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = nerve_config({"web": noop_service(zk, path)}, admin={"port": taken})
        nerve = nerve_process(write_config(tmp_path / "nerve.json", config))
        await until(lambda: children(kz, path), what="registration without the admin API")
        [line] = [x for x in nerve.log().splitlines() if "admin_not_started" in x]
        assert f"port={taken}" in line and "in use" in line
        assert "Traceback" not in nerve.log()
        assert nerve.process.alive


async def test_metrics_carry_build_info_and_process_series_and_no_created(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path = unique_path()
    admin = free_port()
    config = nerve_config({"web": noop_service(zk, path)}, admin={"port": admin})
    nerve_process(write_config(tmp_path / "nerve.json", config))
    await until(lambda: admin_ready(admin) and children(kz, path), what="nerve registered")
    text = admin_get(admin, "/metrics")
    [info] = [x for x in text.splitlines() if x.startswith("nerve_build_info{")]
    assert f'version="{version()}"' in info and info.endswith(" 1.0")
    assert "process_resident_memory_bytes " in text and "python_info{" in text
    assert "nerve_check_results_total{" in text  # a counter: it would have a _created twin
    assert "_created" not in text


def health(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}") if err.code != 404 else {}


async def test_health_of_a_service_is_its_check_state(
    zk: ZooKeeperServer, kz: KazooClient, tmp_path: Path, nerve_process
) -> None:
    path, admin = unique_path(), free_port()
    tcp = [{"type": "tcp", "timeout": 0.2}]
    dead = zk_service(zk.hosts, unique_path(), free_port(), checks=tcp)
    services = {"web": noop_service(zk, path), "dead": dead}
    config = nerve_config(services, admin={"port": admin})
    nerve_process(write_config(tmp_path / "nerve.json", config))
    # (the znode exists a moment before nerve has the create's answer: registered then)
    await until(
        lambda: (
            admin_ready(admin)
            and children(kz, path)
            and health(admin, "/health/web")[1].get("registered")
        ),
        what="nerve registered",
    )
    status, body = health(admin, "/health/web")
    assert (status, body["state"], body["registered"]) == (200, "up", True)
    status, body = health(admin, "/health/dead")
    assert (status, body["state"], body["registered"]) == (503, "down", False)
    request = urllib.request.Request(
        f"http://127.0.0.1:{admin}/maintenance/web", method="POST",
        data=b'{"reason": "deploy"}', headers={"Content-Type": "application/json"},
    )  # fmt: skip
    urllib.request.urlopen(request, timeout=5).close()
    status, body = health(admin, "/health/web")
    assert (status, body["state"]) == (503, "maintenance") and "deploy" in body["reason"]
    assert health(admin, "/health/nope")[0] == 404
