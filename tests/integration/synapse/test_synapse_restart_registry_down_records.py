"""A synapse restarted while ZooKeeper is down, its state file behind what HAProxy runs (an
older synapse ran HAProxy after a rollback), keeps what its records say of the servers the
file lacks: the labels its ``label_filters`` require, the registry options (``backup``).

Those servers are rebuilt from their server lines (``synapse.adopted_servers``). Without
labels a filtered service dropped every one (400 of 400 requests 503, and the same after
a reboot); without its options a ``backup`` server took live traffic (200 of 400). Real
synapse processes, a managed HAProxy 2.6 and ZooKeeper, on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest
from synapse_e2e import Synapse, nerve_record, spread, wait, wait_serving
from test_synapse_restart_registry_down import (
    PATH,
    STATE,
    connect,
    left_serving,
    own_zk,
    refused,
)

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

__all__ = ["own_zk"]  # (the fixture, imported)


def older_synapse_ran(
    syn: Synapse, zk: ZooKeeperServer, nodes: dict, swaps: list[tuple], port: int, **extra: Any
) -> None:
    """What an older synapse did after a rollback: each old backend of ``swaps`` replaced
    by the new one (registered with ``extra``) in ZooKeeper and in HAProxy (its server line
    ends with their options), HAProxy reloaded; it never updates the default state file."""
    writer = connect(zk)
    for old, new in swaps:
        writer.delete(nodes[old.name])
        writer.create(f"{PATH}/{new.name}_", nerve_record(new, **extra), sequence=True)
    writer.stop()
    options = extra.get("haproxy_server_options")
    served = {*nodes} - {old.name for old, _ in swaps}
    if "backup" not in str(options).split():
        served |= {new.name for _, new in swaps}
    config = syn.dir / "haproxy.cfg"
    lines = []
    for line in config.read_text().splitlines():
        for old, new in swaps:
            server_old, server_new = (f"{s.name}_127.0.0.1:{s.port} 127.0.0.1:{s.port}"
                                      for s in (old, new))  # fmt: skip
            if server_old in line:
                line = line.replace(server_old, server_new) + (f" {options}" if options else "")
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    syn.master_command("reload")
    wait_serving(port, served)


def answered(port: int) -> Counter:
    got: Counter = Counter()
    for _ in range(4):
        got += spread(port, 100)
        time.sleep(0.5)
    return got


@pytest.mark.long
def test_a_filtered_service_redeployed_meanwhile_keeps_serving(
    own_zk: ZooKeeperServer, http_backend_factory
) -> None:
    """Every instance redeployed while the older synapse ran (a, b gone; c, d came): the
    state file has none of c, d. They keep the label their filter requires, there and in
    the file written back: a reboot with ZooKeeper still down serves them too."""
    a, b, c, d = (http_backend_factory(name) for name in "abcd")
    tier = {"labels": {"tier": "prod"}}
    filters = ({"label": "tier", "value": "prod"},)
    syn, nodes = left_serving(own_zk, [a, b], port := free_port(), filters, True, **tier)
    try:
        older_synapse_ran(syn, own_zk, nodes, [(a, c), (b, d)], port, **tier)
        own_zk.stop()
        syn.start(timeout=60)
        time.sleep(3)  # (the first apply, and its reload)
        got = answered(port)
        assert set(got) == {"c", "d"}, f"{dict(got)}\n{syn.log(60)}"
        web = json.loads((syn.dir / STATE).read_text())["web"]
        kept = {v["name"]: v.get("labels") for v in web.values() if not v.get("left")}
        assert kept == {"c": {"tier": "prod"}, "d": {"tier": "prod"}}

        syn.signal(signal.SIGTERM)  # a reboot: HAProxy gone too, ZooKeeper still down
        assert syn.process.wait(15) == 0
        for pid in syn.haproxy_pids():
            os.kill(pid, signal.SIGKILL)
        wait(lambda: refused(port), 10)
        syn.start(timeout=60)
        wait_serving(port, {"c", "d"}, timeout=30)
        got = answered(port)
        assert set(got) == {"c", "d"}, f"{dict(got)}\n{syn.log(60)}"
    finally:
        syn.cleanup()


def test_a_backup_the_state_file_lacks_stays_a_backup(
    own_zk: ZooKeeperServer, http_backend_factory
) -> None:
    """The older synapse added c as its record asks (``haproxy_server_options: backup``,
    allowed): c keeps its backup option, b alone takes the traffic."""
    a, b, c = (http_backend_factory(name) for name in "abc")
    syn, nodes = left_serving(own_zk, [a, b], port := free_port(), allow=True)
    try:
        older_synapse_ran(syn, own_zk, nodes, [(a, c)], port, haproxy_server_options="backup")
        own_zk.stop()
        syn.start(timeout=60)
        time.sleep(3)
        got = answered(port)
        assert set(got) == {"b"}, f"backup c took live traffic: {dict(got)}\n{syn.log(60)}"
        line = [s for s in (syn.dir / "haproxy.cfg").read_text().splitlines() if f":{c.port} " in s]
        assert len(line) == 1 and line[0].split()[-1] == "backup", line
    finally:
        syn.cleanup()
