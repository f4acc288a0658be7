"""The private dockerd helper: a crashed daemon still leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from dockertestlib import http_get, published_port

from testbed.dockerd import DockerDaemon
from testbed.images import busybox_image
from testbed.process import wait_until


def test_sigkilled_dockerd_is_cleaned_up() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="smst-crash-"))
    daemon = DockerDaemon(workdir).start()
    try:
        client = daemon.client()
        client.networks.create("crashnet")
        web = client.containers.run(busybox_image(client), detach=True, network="crashnet",
                                    environment={"NAME": "survivor"},
                                    ports={"80/tcp": ("127.0.0.1", None)})  # fmt: skip
        port = published_port(web)
        wait_until(lambda: http_get(port) == "survivor", 20, what="the container to serve")
        client.close()
        os.kill(daemon.pid, signal.SIGKILL)  # containers, shims, mounts and the bridge remain
        wait_until(lambda: daemon.leftovers(), 10, what="leftovers of the killed daemon")
        assert any(item.startswith("mount ") for item in daemon.leftovers())
    finally:
        daemon.stop()
    assert daemon.leftovers() == []
    shutil.rmtree(workdir)
