"""synapse's docker watcher against a private dockerd: labels, image, health, kill, restart."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from dockertestlib import (
    HEALTHY_FILE_CHECK,
    Collector,
    docker_service,
    eventually,
    published_port,
    wait_health,
    watcher_context,
)

from synapse.watchers.docker import DockerWatcher
from testbed.dockerd import DockerDaemon
from testbed.images import busybox_image


async def start_watcher(**discovery: Any) -> tuple[DockerWatcher, Collector]:
    sink = Collector()
    watcher = DockerWatcher("web", docker_service(**discovery), sink, watcher_context())
    await watcher.start()
    return watcher, sink


def local(container: Any) -> str:
    return f"127.0.0.1:{published_port(container)}"


async def test_labelled_containers_follow_start_kill_stop(dockerd, container_factory, busybox):
    a = container_factory("wa", labels={"app": "web"})
    b = container_factory("wb", labels={"app": "web"})
    container_factory("wother", labels={"app": "other"})
    watcher, sink = await start_watcher(
        servers=[{"name": "engine1", "host": dockerd.base_url}],
        container_port=80,
        label_selector={"app": "web"},
        image_name=busybox.split(":")[0],  # the image without its tag matches
    )
    try:
        await sink.wait_addresses([local(a), local(b)])
        assert sink.names() == ["engine1_wa", "engine1_wb"]
        assert watcher.connected
        b.kill()  # SIGKILL: "die" without "stop"
        await sink.wait_addresses([local(a)])
        c = container_factory("wc", labels={"app": "web"})  # arrives after the first list
        await sink.wait_addresses([local(a), local(c)])
        a.stop(timeout=5)
        await sink.wait_addresses([local(c)])
        a.start()  # back, on a new published port
        await sink.wait_addresses([local(a), local(c)])
    finally:
        await watcher.stop()


async def test_image_name_and_unpublished_ports(dockerd, container_factory):
    inner = container_factory("winner", labels={"app": "inner"}, publish=False)
    discovery = {"servers": [dockerd.base_url], "container_port": 80,
                 "label_selector": {"app": "inner"}}  # fmt: skip
    wrong, wrong_sink = await start_watcher(image_name="nginx", **discovery)
    watcher, sink = await start_watcher(**discovery)
    try:
        ip = next(iter(inner.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        await sink.wait_addresses([f"{ip}:80"])  # not published: the container's own IP
        await wrong_sink.wait_addresses([])  # another image: nothing
    finally:
        await watcher.stop()
        await wrong.stop()


async def test_healthcheck_status_decides(dockerd, container_factory):
    web = container_factory("whealth", labels={"app": "health"}, healthcheck=HEALTHY_FILE_CHECK)
    watcher, sink = await start_watcher(servers=[dockerd.base_url], container_port=80,
                                        label_selector={"app": "health"})  # fmt: skip
    try:
        wait_health(web, "healthy")
        await sink.wait_addresses([local(web)])
        web.exec_run(["rm", "/www/healthy"])
        wait_health(web, "unhealthy")
        await sink.wait_addresses([])
        web.exec_run(["touch", "/www/healthy"])
        await sink.wait_addresses([local(web)])
    finally:
        await watcher.stop()


async def test_resync_after_dockerd_restart() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="smst-restart-"))
    daemon = DockerDaemon(workdir).start()
    watcher = None
    try:
        client = daemon.client()
        image = busybox_image(client)
        client.networks.create("restartnet")
        run = {"detach": True, "network": "restartnet", "labels": {"app": "r"},
               "ports": {"80/tcp": ("127.0.0.1", None)}}  # fmt: skip
        keeps = client.containers.run(image, name="keeps", restart_policy={"Name": "always"}, **run)
        goes = client.containers.run(image, name="goes", **run)
        watcher, sink = await start_watcher(servers=[daemon.base_url], container_port=80,
                                            label_selector={"app": "r"})  # fmt: skip
        await sink.wait_addresses([local(keeps), local(goes)])
        resyncs = watcher._watches[0].resyncs
        client.close()
        daemon.stop(keep_data=True)  # both containers stop; only "keeps" comes back
        await eventually(lambda: not watcher.connected, what="the watcher to see dockerd gone")
        daemon.start()
        client = daemon.client()
        await eventually(lambda: watcher._watches[0].resyncs > resyncs, what="a full resync")
        keeps = client.containers.get("keeps")
        await eventually(lambda: keeps.reload() or keeps.status == "running", what="restart")
        await sink.wait_addresses([local(keeps)])
        assert watcher.connected
        client.close()
    finally:
        if watcher is not None:
            await watcher.stop()
        daemon.stop()
        assert daemon.leftovers() == []
        shutil.rmtree(workdir, ignore_errors=True)


async def test_a_container_moved_to_another_network_gets_its_new_address(
    dockerd, docker_client, container_factory, network
):
    """Unpublished port: the address is the container's IP, which `docker network
    disconnect`/`connect` change without any container event."""
    inner = container_factory("wmoved", labels={"app": "moved"}, publish=False)
    watcher, sink = await start_watcher(servers=[dockerd.base_url], container_port=80,
                                        label_selector={"app": "moved"})  # fmt: skip
    other = docker_client.networks.create("smartstack-test-moved", driver="bridge")
    try:
        first = next(iter(inner.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
        await sink.wait_addresses([f"{first}:80"])
        docker_client.networks.get(network).disconnect(inner)
        other.connect(inner)
        inner.reload()
        moved = inner.attrs["NetworkSettings"]["Networks"]["smartstack-test-moved"]["IPAddress"]
        await sink.wait_addresses([f"{moved}:80"], timeout=10)  # the resync is 60 s away
    finally:
        await watcher.stop()
        inner.remove(force=True)
        other.remove()
