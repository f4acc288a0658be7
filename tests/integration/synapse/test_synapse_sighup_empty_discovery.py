"""A SIGHUP whose new discovery gives a service no server (a path typo, a label_filters
value typo) while the running one serves: the running watcher is followed on until the new
one lists a server (real ZooKeeper, synapse and HAProxy).

Review s27: a config typo that still loads emptied the serving backend with no word from
synapse and /health 200 (use_previous_backends false: 363 of 371 requests failed), or froze
it (the default: an instance withdrawn meanwhile kept its third of the traffic).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait_serving
from synapse_reload import reload_web, wait_gone, zk_web

from synapse.outgoing_hold import OUTGOING_HOLD_S
from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

AZ1 = {"zone": "az1"}


@pytest.mark.long
def test_a_sighup_to_a_missing_path_keeps_following_the_old_one_until_records_appear(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b, c = (http_backend_factory(n) for n in ("a", "b", "c"))
    old, new = "/empty/web", "/empty/wbe"
    writer.create(f"{old}/a_", nerve_record(a, labels=AZ1), sequence=True, makepath=True)
    withdrawn = writer.create(f"{old}/b_", nerve_record(b, labels=AZ1), sequence=True)
    port = free_port()

    def web(path: str, zone: str = "az1") -> dict[str, Any]:
        return zk_web(zk.hosts, port, path, zone)

    with Synapse({"web": web(old)}) as syn:
        wait_serving(port, {"a", "b"})
        with Load(port, seconds=60) as load:
            since = reload_web(syn, web(new))  # the typo: nothing there
            writer.delete(withdrawn)  # a withdrawal meanwhile: followed, not frozen
            wait_gone(port, "b", "a")
            health = json.loads(syn.admin("/health"))  # (200: HAProxy runs what we want)
            assert health["ok"] and health["degraded"][0].startswith(
                "web: the new discovery lists no servers"
            ), health
            replacing = syn.status()["services"]["web"]["watcher"]["replacing"]
            assert replacing["empty"] == "the new discovery lists no servers", replacing
            wait_until(lambda: "event=watcher_swap_stalled" in since(), 30, what=since())
            [said] = [x for x in since().splitlines() if "event=watcher_swap_stalled" in x]
            assert "level=error" in said and "the new discovery lists no servers" in said

            # nerve-like records at the new path: the swap completes
            writer.create(f"{new}/c_", nerve_record(c, labels=AZ1), sequence=True,
                          makepath=True)  # fmt: skip
            wait_serving(port, {"c"})
            assert "event=watcher_swapped" in since()
            assert "degraded" not in json.loads(syn.admin("/health"))

            # a label_filters value typo: every record dropped, the old filters serve on
            since = reload_web(syn, web(new, zone="az-1"))
            wait_until(lambda: (syn.status()["services"]["web"]["watcher"].get("replacing")
                                or {}).get("empty"), 10, what=since())  # fmt: skip
            health = json.loads(syn.admin("/health"))
            assert "every one dropped by label_filters zone=az-1" in health["degraded"][0]
            wait_serving(port, {"c"})
        assert load.ok > 0 and load.failures == [], load.failures[:5]


def test_a_brief_outage_of_the_old_instances_while_held_does_not_commit_the_typo(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """Review s27 cr2: held (a SIGHUP to a missing path), then every old instance failed its
    check for 0.7 s: the swap completed on the old list's emptiness and, the instances back,
    496 of 496 requests failed for good with /health ok and nothing degraded."""
    a, b = (http_backend_factory(n) for n in ("a", "b"))
    old = "/blip/web"
    writer.ensure_path(old)
    port = free_port()

    def web(path: str) -> dict[str, Any]:
        return zk_web(zk.hosts, port, path)

    def register() -> list[str]:
        return [writer.create(f"{old}/{x.name}_", nerve_record(x), sequence=True,
                              ephemeral=True) for x in (a, b)]  # fmt: skip

    with Synapse({"web": web(old)}) as syn:
        znodes = register()
        wait_serving(port, {"a", "b"})
        since = reload_web(syn, web("/blip/wbe"), "watcher_swap_held")  # the typo: nothing
        for znode in znodes:  # every old instance fails its check: the old list empties
            writer.delete(znode)
        # (held up to OUTGOING_HOLD_S from the swap's start, then applied)
        wait_until(lambda: syn.status()["services"]["web"]["servers"] == [],
                   OUTGOING_HOLD_S + 15, what=since())  # fmt: skip
        register()  # back: followed (the swap still waits for a server at the new path)
        wait_serving(port, {"a", "b"})
        assert "event=watcher_swapped" not in since(), since()
        health = json.loads(syn.admin("/health"))
        assert health["ok"] and health["degraded"][0].startswith(
            "web: the new discovery lists no servers; serving the previous discovery's"
        ), health
