"""A registry move under traffic: every nerve and synapse SIGHUPed at once from ZooKeeper to
etcd, ``use_previous_backends: false`` (real nerves, synapse, HAProxy, ZooKeeper, etcd).

Review s35/s36: the nerves left ZooKeeper while synapse still read its file, or before its
new watcher's first list; the old watcher's emptied list was applied and HAProxy's backend
was empty until the new list came (4 of 471 requests 503; the review's reproduction, at
~60 req/s with synapse's SIGHUP 0.2 s after the nerves': 20 of 3,138 over 6 moves). Here
synapse's file is written in place, so its reload waits ~2 s for it to be still: the
nerves are gone from ZooKeeper well before synapse's new watcher reads etcd (before: 98 of
230 requests 503; now 0).
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import yaml
from nerve_testlib import (
    NerveProcess,
    children,
    etcd_service,
    nerve_config,
    write_config,
    zk_service,
)
from synapse_e2e import Load, Synapse, wait_serving
from synapse_reload import log_since, zk_web

from testbed.etcd import EtcdCluster
from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def test_a_registry_move_of_nerves_and_synapse_at_once_empties_no_backend(
    zk: ZooKeeperServer, etcd: EtcdCluster, http_backend_factory, writer, tmp_path: Path
) -> None:
    backends = [http_backend_factory(n) for n in ("a", "b", "c")]
    tag = uuid.uuid4().hex[:8]
    zk_path, etcd_path = f"/move-{tag}/web", f"/move-{tag}/web"
    files = [tmp_path / f"nerve-{b.name}.json" for b in backends]

    def nerve_files(service) -> None:  # renamed over: each nerve reads its file at once
        for file, b in zip(files, backends, strict=True):
            config = nerve_config({"web": service(b.port)}, instance_id=f"i-{b.name}")
            write_config(file, config)

    nerve_files(lambda p: zk_service(zk.hosts, zk_path, p))
    nerves = [NerveProcess(f, tmp_path, name=f.stem).start() for f in files]
    try:
        port = free_port()
        with Synapse({"web": zk_web(zk.hosts, port, zk_path)}) as syn:
            wait_serving(port, {"a", "b", "c"}, timeout=30)
            nerve_files(lambda p: etcd_service(etcd.endpoints, etcd_path, p))
            syn.config["services"]["web"]["discovery"] = {
                "method": "etcd", "endpoints": etcd.endpoints, "path": etcd_path}  # fmt: skip
            since = log_since(syn)
            with Load(port, seconds=40, rate=60) as load:
                time.sleep(0.5)
                syn.config_path.write_text(yaml.safe_dump(syn.config))  # in place: held ~2 s
                for nerve in nerves:
                    nerve.signal(signal.SIGHUP)
                syn.signal(signal.SIGHUP)
                wait_until(lambda: children(writer, zk_path) == [], 20, what="nerves gone")
                wait_until(lambda: "event=watcher_swapped" in since(), 30, what=since())
                time.sleep(1.0)
            # the race is had: the nerves left ZooKeeper before the new watcher's list came
            [swapped] = [x for x in since().splitlines() if "event=watcher_swapped" in x]
            left = [x for n in nerves for x in n.log().splitlines() if "event=znode_deleted" in x]
            assert len(left) == 3 and max(left) < swapped, (left, swapped)
            assert load.ok > 100 and load.failures == [], (len(load.failures), load.ok)
            assert "event=outgoing_list_held" in since() and "why=swapped" in since(), since()
            wait_serving(port, {"a", "b", "c"})
    finally:
        for nerve in nerves:
            nerve.process.stop(timeout=10)
