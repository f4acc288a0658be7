"""A restarted edge synapse (docker_services) adopting its HAProxy keeps the containers'
services: with dockerd down (live-restore, the containers keep running) and with dockerd up,
clients see no failed request and HAProxy no reload (the services are saved beside the state
file and are in the restarted synapse's first apply; synapse.docker_services_saved)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from synapse_e2e import Load, Synapse, http_get

from testbed.dockerd import DockerDaemon
from testbed.images import busybox_image
from testbed.process import free_port, wait_until

NETWORK = "edgerestart"
# Path "/": Load's requests (no Host header of a route) reach the service.
LABELS = {"smartstack.service": "web", "smartstack.port": "80", "smartstack.paths": "/"}


@pytest.fixture
def live_dockerd() -> Iterator[DockerDaemon]:
    """A live-restore dockerd (its containers outlive it) with two web containers; not
    published: docker-proxy would die with dockerd, synapse reaches the containers' IPs."""
    workdir = Path(tempfile.mkdtemp(prefix="smst-edgers-"))
    daemon = DockerDaemon(workdir, extra_args=["--live-restore"])
    try:
        daemon.start()
        client = daemon.client()
        try:
            client.networks.create(NETWORK, driver="bridge")
            image = busybox_image(client)
            for name in ("edge-rs1", "edge-rs2"):
                client.containers.run(image, detach=True, name=name, network=NETWORK,
                                      labels=LABELS, environment={"NAME": name})  # fmt: skip
        finally:
            client.close()
        yield daemon
    finally:
        daemon.stop()
        leftovers = daemon.leftovers()
        shutil.rmtree(workdir, ignore_errors=True)
        assert leftovers == []


def edge_synapse(daemon: DockerDaemon) -> Synapse:
    port = free_port()
    syn = Synapse({}, haproxy={"shared_frontend": [f"bind 127.0.0.1:{port}"]},
                  docker_services={"enabled": True, "engine": daemon.base_url},
                  startup_wait=0.5)  # fmt: skip
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # the next synapse adopts it
    syn.write_config()
    syn.port = port  # type: ignore[attr-defined]
    return syn


def serving(port: int) -> bool:
    try:
        return http_get(port, timeout=1.0)[0] == 200
    except OSError:
        return False


def restart(syn: Synapse) -> None:
    """SIGTERM (HAProxy left running), start again on the same files, first apply done."""
    syn.process.stop(timeout=15)
    syn.process.start()
    wait_until(syn._applied, 30, what=f"the restarted synapse's first apply\n{syn.log()}")


def test_restart_while_dockerd_is_down_keeps_serving(live_dockerd):
    daemon = live_dockerd
    with edge_synapse(daemon) as syn:
        port = syn.port  # type: ignore[attr-defined]
        wait_until(lambda: serving(port), 30, what="web served")
        time.sleep(1.0)  # (the services file is written after the first answer)
        reloads = syn.master_reloads()
        with Load(port, seconds=90) as load:
            daemon.stop_daemon_only()  # live-restore: the containers keep running
            restart(syn)
            time.sleep(3.0)  # the restarted synapse runs without Docker's answer
            assert load.failures == [], syn.log(60)
            assert sorted(syn.status()["services"]) == ["web"]
            daemon.start()
            wait_until(lambda: syn.metric("synapse_docker_engine_connected") == 1, 30,
                       what="the watcher to follow dockerd again")  # fmt: skip
            time.sleep(1.0)  # the source's answer too (the same services: nothing to apply)
        assert load.ok > 0
        assert load.failures == [], syn.log(60)
        assert syn.master_reloads() == reloads, syn.log(60)
        assert "docker_services_restored" in syn.log(400)


def test_restart_with_dockerd_up_fails_no_request_and_reloads_nothing(live_dockerd):
    daemon = live_dockerd
    with edge_synapse(daemon) as syn:
        port = syn.port  # type: ignore[attr-defined]
        wait_until(lambda: serving(port), 30, what="web served")
        time.sleep(1.0)
        reloads = syn.master_reloads()
        with Load(port, seconds=60) as load:
            restart(syn)
            time.sleep(3.0)  # the source's and the watcher's answers are in
        assert load.ok > 0
        assert load.failures == [], syn.log(60)
        assert syn.master_reloads() == reloads, syn.log(60)
