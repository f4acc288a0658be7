"""A SIGHUP that changes a service's discovery starts the new watcher beside the running one,
which follows the registry until the new one's first complete list (real synapse, HAProxy,
ZooKeeper with a SASL user, etcd with user auth).

Review s22/au: the running watcher was stopped first. A credential the registry refused
(a ZooKeeper SASL typo: kazoo never retries it; an etcd password set in synapse before in
etcd) froze the service: an instance withdrawn meanwhile kept its share of the traffic,
479 and 304 client 503s (s22/fixAUS), the ZooKeeper one until the next SIGHUP.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait_serving
from synapse_reload import sighup, wait_gone, web

from testbed.etcd import EtcdCluster
from testbed.process import free_port, wait_processes_gone, wait_until
from testbed.zookeeper import ZooKeeperServer

import test_synapse_registry_security as security  # isort: skip

sasl_zk = security.sasl_zk  # its ZooKeeper with SASL, whose one user is nerve:s3cret

REFUSED_SASL = "ZooKeeper refused the sasl credential"


@pytest.mark.long
def test_a_refused_zookeeper_credential_leaves_the_running_watcher_following(
    sasl_zk: ZooKeeperServer, http_backend_factory
) -> None:
    a, b, c = (http_backend_factory(n) for n in ("a", "b", "c"))
    writer = KazooClient(hosts=sasl_zk.hosts)  # (anonymous: the nodes are world-readable)
    writer.start(20)
    try:
        path = "/swap/web"
        writer.create(f"{path}/a_", nerve_record(a), sequence=True, makepath=True)
        withdrawn = writer.create(f"{path}/b_", nerve_record(b), sequence=True)
        port = free_port()

        def zk(credential: str, scheme: str = "sasl") -> dict[str, Any]:
            return {"method": "zookeeper", "hosts": [sasl_zk.hosts], "path": path,
                    "zk_auth": {"scheme": scheme, "credential": credential}}  # fmt: skip

        with Synapse(web(zk("nerve:s3cret"), port)) as syn:
            wait_serving(port, {"a", "b"})
            since = sighup(syn, zk("nerve:s3cre7"))  # a typo: ZooKeeper refuses it
            writer.delete(withdrawn)
            wait_gone(port, "b", "a")  # the running watcher saw it
            status = syn.status()["services"]["web"]["watcher"]
            assert status["connected"] and REFUSED_SASL in status["replacing"]["error"], status
            wait_until(lambda: "event=watcher_swap_stalled" in since(), 30, what=since())
            [said] = [x for x in since().splitlines() if "event=watcher_swap_stalled" in x]
            assert "level=error" in said and "service=web" in said and REFUSED_SASL in said
            assert syn.status()["services"]["web"]["watcher"]["replacing"]["stalled"]

            # A credential ZooKeeper takes: the swap completes, no server drops.
            with Load(port, seconds=60) as load:
                since = sighup(syn, zk("nerve:s3cret", "digest"))
                wait_until(lambda: "event=watcher_swapped" in since(), 30, what=since())
                time.sleep(0.5)
            assert load.ok > 0 and load.failures == [], load.failures[:5]
            assert syn.status()["services"]["web"]["watcher"].get("replacing") is None
            writer.create(f"{path}/c_", nerve_record(c), sequence=True)
            wait_serving(port, {"a", "c"})  # the new watcher follows the registry
            assert [e["hosts"] for e in syn.status()["zookeeper"]] == [sasl_zk.hosts]
    finally:
        writer.stop()
        writer.close()


def etcdctl(endpoint: str, *args: str, stdin: str | None = None) -> None:
    env = {**os.environ, "ETCDCTL_API": "3"}
    command = ["etcdctl", f"--endpoints={endpoint}", *args]
    subprocess.run(command, input=stdin, text=True, check=True, capture_output=True,
                   timeout=30, env=env)  # fmt: skip


def test_an_etcd_password_set_before_etcd_has_it_swaps_when_etcd_does(
    tmp_path: Path, http_backend_factory
) -> None:
    a, b, c = (http_backend_factory(n) for n in ("a", "b", "c"))
    cluster = EtcdCluster(size=1, workdir=tmp_path / "etcd").start()
    try:
        ep = cluster.endpoints[0]
        root = "--user=root:rootpw"
        etcdctl(ep, "user", "add", "root:rootpw")
        etcdctl(ep, "role", "add", "ro")
        etcdctl(ep, "role", "grant-permission", "ro", "--prefix=true", "read", "/svc/")
        etcdctl(ep, "user", "add", "synapse:oldpw")
        etcdctl(ep, "user", "grant-role", "synapse", "ro")
        etcdctl(ep, "auth", "enable")
        for backend in (a, b, c):
            record = json.dumps(json.loads(nerve_record(backend)))
            etcdctl(ep, root, "put", f"/svc/web/{backend.name}", record)
        port = free_port()

        def etcd(password: str) -> dict[str, Any]:
            return {"method": "etcd", "endpoints": [ep], "path": "/svc/web",
                    "etcd_user": "synapse", "etcd_password": password, "etcd_transport": "json",
                    "retry_policy": {"base_interval": 0.2, "max_interval": 1}}  # fmt: skip

        with Synapse(web(etcd("oldpw"), port)) as syn:
            wait_serving(port, {"a", "b", "c"})
            since = sighup(syn, etcd("newpw"))  # etcd still has the old one
            etcdctl(ep, root, "del", "/svc/web/b")
            wait_gone(port, "b", "a")  # the running watcher saw it
            replacing = syn.status()["services"]["web"]["watcher"]["replacing"]
            assert "authentication failed" in replacing["error"], replacing
            with Load(port, seconds=60) as load:
                etcdctl(
                    ep, root, "user", "passwd", "synapse", "--interactive=false", stdin="newpw\n"
                )
                wait_until(lambda: "event=watcher_swapped" in since(), 30, what=since())
                time.sleep(0.5)
            assert load.ok > 0 and load.failures == [], load.failures[:5]
            assert syn.status()["services"]["web"]["watcher"].get("replacing") is None
            etcdctl(ep, root, "del", "/svc/web/c")
            wait_serving(port, {"a"})  # the new watcher follows the registry
    finally:
        cluster.stop()
        wait_processes_gone([p for p in cluster.pids if p is not None])
