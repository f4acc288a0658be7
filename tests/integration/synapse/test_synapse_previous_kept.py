"""A service served its previous list while its discovery lists no server is said on
/health (``degraded``) and in the log (``previous_backends_kept``), until a server is
listed again (real ZooKeeper, synapse and a managed HAProxy).

Review s28: a held SIGHUP swap or restart hold that ended on a typo with
use_previous_backends (the default) left the service on a frozen list from a discovery
that lists nothing, /health with nothing degraded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Load, Synapse, nerve_record, wait_serving
from synapse_reload import reload_web, serving_two, zk_service

from synapse.outgoing_hold import OUTGOING_HOLD_S
from synapse.watcher_swap import HOLD_BOTH_EMPTY_S
from testbed.process import wait_until
from testbed.zookeeper import ZooKeeperServer

KEPT = "web: the discovery lists no servers; serving the previous list (2 servers, "


def said(since: Any, name: str) -> list[str]:
    return [x for x in since().splitlines() if f"event={name} " in x or x.endswith(f"={name}")]


def degraded(syn: Synapse) -> list[str]:
    return json.loads(syn.admin("/health")).get("degraded", [])


def test_a_restart_holds_ttl_end_is_said_while_the_saved_list_is_served(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    backends = [http_backend_factory(n) for n in ("a", "b")]
    old, new = "/kept-ttl/web", "/kept-ttl/wbe"  # (use_previous_backends: the default, true)
    port, syn = serving_two(zk, writer, old, backends)
    syn.config["haproxy"]["state_file_ttl"] = 8
    syn.write_config()
    with syn, Load(port, seconds=60) as load:
        wait_serving(port, {"a", "b"})
        since = reload_web(
            syn, zk_service(zk, new, port), "watcher_swap_held"
        )  # the typo: nothing there
        syn.process.stop(15)  # SIGTERM; started again with the same file
        syn.process.start()
        wait_until(lambda: "event=restart_discovery_held " in since(), 30, what=since())
        assert not said(since, "previous_backends_kept")  # (the hold says it)
        # the saved servers' state_file_ttl: the hold ends, the list stays (previous)
        wait_until(lambda: "event=restart_discovery_held_ended" in since(), 20, what=since())
        wait_until(lambda: degraded(syn), 5, what=since())
        [line] = degraded(syn)
        assert line.startswith(KEPT), line
        # said on /status and the status page too (the page's row is red with it)
        [on_status] = json.loads(syn.admin("/status"))["services"]["web"]["degraded"]
        page = json.loads(syn.admin("/status/page.json"))["services"]
        assert on_status.startswith(KEPT.removeprefix("web: "))
        assert next(s["w"]["e"] for s in page if s["n"] == "web").startswith(on_status[:40])
        [warned] = said(since, "previous_backends_kept")
        assert "level=warning" in warned and "servers=2" in warned, warned
        wait_serving(port, {"a", "b"})

        # a record at the new path: its list is served, nothing kept any more
        writer.create(f"{new}/c_", nerve_record(http_backend_factory("c")), sequence=True,
                      makepath=True)  # fmt: skip
        wait_serving(port, {"c"})
        wait_until(lambda: not degraded(syn), 5, what=since())
        assert said(since, "previous_backends_kept_ended")
        load.stop()
        assert load.ok > 0 and load.failures == [], load.failures[:5]


@pytest.mark.long
def test_a_held_swaps_end_after_the_old_list_emptied_is_said(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    """The held swap's 60 s end (the old instances withdrawn too): the previous list
    stays under use_previous_backends, and is said as such from then on."""
    backends = [http_backend_factory(n) for n in ("a", "b")]
    old = "/kept-end/web"
    port, syn = serving_two(zk, writer, old, backends)
    with syn:
        wait_serving(port, {"a", "b"})
        since = reload_web(
            syn, zk_service(zk, "/kept-end/wbe", port), "watcher_swap_held"
        )  # the typo
        withdrawal = writer.transaction()  # the old instances withdrawn too, at once: one
        for child in writer.get_children(old):  # at a time could leave one kept (a read
            withdrawal.delete(f"{old}/{child}")  # between the deletes: CI saw {b} kept)
        assert all(result is True for result in withdrawal.commit())
        # The emptied list waits OUTGOING_HOLD_S from the swap's start (outgoing_list_held),
        # then is applied: a wait of the bound alone raced it (round 50's CI).
        wait_until(lambda: said(since, "previous_backends_kept"), OUTGOING_HOLD_S + 15,
                   what=since())  # fmt: skip
        # The transaction's two deletions can reach synapse as two lists, {b} then none:
        # folded (synapse.outgoing_hold), the whole list is kept (round 36's CI kept {b}).
        [line] = degraded(syn)  # (the held swap's line says it meanwhile, not twice)
        assert line.startswith("web: the new discovery lists no servers"), line
        wait_until(lambda: "event=watcher_swapped" in since(), HOLD_BOTH_EMPTY_S + 15,
                   what=since())  # fmt: skip
        wait_serving(port, {"a", "b"})  # (frozen: use_previous_backends)
        [line] = degraded(syn)
        assert line.startswith(KEPT), line
        assert len(said(since, "previous_backends_kept")) == 1
