"""A synapse restarted while a SIGHUP's typo was held (synapse.watcher_swap) serves the
servers the previous run saved until the typo's discovery lists one (real ZooKeeper,
synapse and a managed HAProxy the restart adopts).

Review s27/cr2: the state file did not say which discovery its servers came from, and a
start read them through the new config (its label_filters, its use_previous_backends): a
restart with the path typo and use_previous_backends false failed 297 of 310 requests in
6 s, /health ok with no word; a label_filters value typo 299 of 310 with the defaults.
"""

from __future__ import annotations

import json
from typing import Any

from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait_serving
from synapse_reload import reload_web, zk_web

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

AZ1 = {"zone": "az1"}
HELD = "web: the discovery changed since the last run and lists no servers; serving the 2"


def test_a_restart_while_a_missing_path_is_held_serves_the_saved_servers(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b, c = (http_backend_factory(n) for n in ("a", "b", "c"))
    old, new = "/restart-held/web", "/restart-held/wbe"
    for server in (a, b):
        writer.create(f"{old}/{server.name}_", nerve_record(server, labels=AZ1),
                      sequence=True, makepath=True)  # fmt: skip
    port = free_port()

    def web(path: str) -> dict[str, Any]:
        return zk_web(zk.hosts, port, path, "az1")

    syn = Synapse({"web": web(old)})
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # adopted by the restart
    syn.write_config()
    with syn:
        wait_serving(port, {"a", "b"})
        with Load(port, seconds=90) as load:
            since = reload_web(syn, web(new), "watcher_swap_held")  # the typo: nothing there
            wait_serving(port, {"a", "b"})

            syn.process.stop(15)  # SIGTERM; started again with the same file
            syn.process.start()
            wait_until(lambda: "event=restart_discovery_held" in since(), 30, what=since())
            [said] = [x for x in since().splitlines() if "event=restart_discovery_held" in x]
            assert "level=error" in said and "servers=2" in said, said
            health = json.loads(syn.admin("/health"))
            assert health["ok"] and health["degraded"][0].startswith(HELD), health
            assert syn.status()["services"]["web"]["origin"] == "state_file"
            wait_serving(port, {"a", "b"})

            # a record at the new path: its list is served, the hold is over
            writer.create(f"{new}/c_", nerve_record(c, labels=AZ1), sequence=True,
                          makepath=True)  # fmt: skip
            wait_serving(port, {"c"})
            assert "event=restart_discovery_held_ended" in since()
            assert "degraded" not in json.loads(syn.admin("/health"))
        assert load.ok > 0 and load.failures == [], load.failures[:5]
        # the file now says the new discovery: a restart holds nothing
        state = json.loads(next(syn.dir.rglob("*.synapse-state.json")).read_text())
        assert set(state["_synapse"]["discovery"]["services"]) == {"web"}
