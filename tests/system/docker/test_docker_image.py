"""The project image, built from the debootstrap base against the private dockerd (slow: the
first build takes about a minute; later runs load it from .cache/images)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dockertestlib import http_get, published_port

import docker
from testbed.images import REPO, project_image
from testbed.process import wait_until

# The first test's setup builds the image (debootstrap, the build, saving it to the cache):
# about a minute on a quiet machine, but a CI run of 15 minutes saw it pass 180 s on a loaded
# one. Each test's own part is short; a hang is still caught at 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
_build_failed: list[BaseException] = []  # (a failed build is not tried again by every test)


@pytest.fixture(scope="module")
def image(dockerd, docker_client, prebuilt_image) -> str:
    if _build_failed:
        pytest.fail(f"the project image's build failed in an earlier test: {_build_failed[0]!r}")
    try:
        return project_image(docker_client, dockerd.env())
    except BaseException as exc:  # (pytest-timeout's failure too)
        _build_failed.append(exc)
        raise


def test_image_is_non_root_and_checks_configs(docker_client, image) -> None:
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "smartstack"
    assert config["Entrypoint"][-1] == "/usr/local/bin/smartstack-entrypoint"
    assert config["Healthcheck"]["Test"][-1] == "/usr/local/bin/smartstack-healthcheck"
    assert {"1026/tcp", "1025/tcp"} <= set(config["ExposedPorts"])
    assert config["Labels"]["org.opencontainers.image.title"] == "smartstack"
    out = docker_client.containers.run(
        image,
        ["nerve", "-k"],  # the entrypoint adds -c /etc/smartstack/nerve.yaml
        volumes={str(REPO / "examples" / "compose"): {"bind": "/etc/smartstack", "mode": "ro"}},
        remove=True,
    )
    assert b"nerve.yaml: ok" in out
    versions = docker_client.containers.run(image, ["sh", "-c", "id -u; haproxy -v"], remove=True)
    uid, haproxy = versions.decode().split("\n", 1)
    assert uid != "0" and haproxy.startswith("HAProxy version 2.")


def test_the_image_runs_from_bytecode(docker_client, image) -> None:
    """A daemon's imports are read as bytecode, none compiled at start: the non-root user
    cannot write it, and compiling ~500 modules per start costs a sidecar ~5 MB of RSS."""
    imports = "import synapse.cli, synapse.daemon, synapse.watchers.etcd, nerve.cli"
    err = docker_client.containers.run(
        image, ["/opt/smartstack/bin/python", "-v", "-c", imports],
        stdout=False, stderr=True, remove=True,
    ).decode()  # fmt: skip
    code = [line for line in err.splitlines() if line.startswith("# code object from ")]
    compiled = [line for line in code if line.endswith(".py")]
    assert len(code) > 300 and not compiled, compiled[:5] or f"{len(code)} modules read"


def test_synapse_in_the_image_follows_containers(
    dockerd, docker_client, image, network, container_factory, tmp_path: Path
) -> None:
    """synapse (non-root, managed HAProxy, docker watcher through the mounted socket) sends
    traffic to labelled busybox containers by their IP on the shared network."""
    first = container_factory("imgapp1", labels={"imgtest": "1"}, publish=False)
    (tmp_path / "synapse.yaml").write_text(yaml.safe_dump(SYNAPSE_CONFIG))
    os.chmod(tmp_path, 0o755)
    synapse = docker_client.containers.run(
        image,
        ["synapse"],
        detach=True,
        name="imgsynapse",
        network=network,
        group_add=[str(os.stat(dockerd.socket_path).st_gid)],
        volumes={str(tmp_path): {"bind": "/etc/smartstack", "mode": "ro"},
                 str(dockerd.socket_path): {"bind": "/var/run/docker.sock", "mode": "rw"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
    )  # fmt: skip
    try:
        port = published_port(synapse, 8080)
        logs = lambda: synapse.logs(tail=30).decode(errors="replace")  # noqa: E731
        try:
            wait_until(lambda: http_get(port) == "imgapp1", 60, what="imgapp1 through HAProxy")
            container_factory("imgapp2", labels={"imgtest": "1"}, publish=False)
            wait_until(lambda: {http_get(port) for _ in range(6)} == {"imgapp1", "imgapp2"}, 60,
                       what="both apps through HAProxy")  # fmt: skip
            first.kill()
            wait_until(lambda: {http_get(port) for _ in range(6)} == {"imgapp2"}, 60,
                       what="imgapp1 gone")  # fmt: skip
            wait_until(lambda: health(synapse) == "healthy", 60, what="HEALTHCHECK on /health")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        synapse.stop(timeout=10)  # SIGTERM through tini: synapse stops HAProxy and exits 0
        assert synapse.wait(timeout=20)["StatusCode"] == 0, logs()
        # (HAProxy served 5 s more first: managed.stop_delay auto, in a container)
        assert "event=haproxy_stop_delayed delay_s=5.0" in synapse.logs().decode(), logs()
    finally:
        synapse.remove(force=True)


def health(container) -> str:
    container.reload()
    return container.attrs["State"]["Health"]["Status"]


SYNAPSE_CONFIG = {
    "services": {"web": {
        "discovery": {"method": "docker", "servers": ["unix:///var/run/docker.sock"],
                      "container_port": 80, "label_selector": {"imgtest": "1"}},
        "haproxy": {"port": 8080, "listen": ["mode http"]}}},
    "haproxy": {"managed": {}, "config_file_path": "/var/lib/smartstack/haproxy.cfg",
                "bind_address": "0.0.0.0",
                "defaults": ["mode http", "timeout connect 1s", "timeout client 5s",
                             "timeout server 5s", "retries 3", "option redispatch 1"]},
    # no admin key: the default port (1026, on 127.0.0.1 inside the container) is where
    # the HEALTHCHECK asks first
}  # fmt: skip


def test_sighups_from_the_container_s_start_on_do_not_end_it(
    docker_client, image, tmp_path: Path
) -> None:
    """tini passes a `docker kill -s HUP` on at once; the entrypoint ignores SIGHUP until
    nerve holds it (docker/entrypoint.sh). SIGHUPs every 10 ms from the moment `docker run`
    returns until nerve runs: it runs (before, the first one ended the container)."""
    # (no registry there: nerve runs and retries it)
    service = {"host": "127.0.0.1", "port": 80, "checks": [], "zk_hosts": ["127.0.0.1:9"],
               "zk_path": "/image/web"}  # fmt: skip
    config = {"instance_id": "i-1", "admin": {"port": None}, "services": {"web": service}}
    (tmp_path / "nerve.yaml").write_text(yaml.safe_dump(config))
    os.chmod(tmp_path, 0o755)
    nerve = docker_client.containers.run(
        image, ["nerve"], detach=True,
        volumes={str(tmp_path): {"bind": "/etc/smartstack", "mode": "ro"}},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"nerve_started" not in nerve.logs() and time.monotonic() < deadline:
            try:
                docker_client.api.kill(nerve.id, signal="SIGHUP")
            except docker.errors.APIError as exc:  # 409: the container is not running
                raise AssertionError(f"{exc}\n{nerve.logs().decode(errors='replace')}") from None
            time.sleep(0.01)
        time.sleep(0.5)
        nerve.reload()
        assert nerve.status == "running", nerve.logs().decode(errors="replace")
    finally:
        nerve.remove(force=True)


def test_compose_demo(dockerd, image) -> None:
    """`make compose-demo`'s driver against the test dockerd (the image is already there):
    balanced traffic, a stopped app without failed requests, its return, and clean-up."""
    env = dict(os.environ, **dockerd.env())
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "compose_demo.py")], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 failed" in result.stdout
    assert "passed in" in result.stdout
