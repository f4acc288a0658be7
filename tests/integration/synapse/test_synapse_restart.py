"""Restarts never touch traffic: real synapse processes, a managed HAProxy 2.6, ZooKeeper.

- SIGTERM leaves HAProxy serving (``managed.stop_on_exit`` false, the default); the next
  synapse adopts it and, nothing having changed, reconciles without a reload;
- kill -9 of HAProxy (master and workers): synapse sees it at once and starts it again
  from the config file, with its servers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from synapse_e2e import Load, Synapse, register, wait, wait_serving, zk_service

from testbed.process import free_port, process_gone, wait_processes_gone


def test_sigterm_leaves_haproxy_serving_and_the_next_synapse_adopts_it_without_reload(
    zk, writer, http_backend_factory
):
    a, b = http_backend_factory("a"), http_backend_factory("b")
    path = "/restart/web"
    register(writer, path, a)
    register(writer, path, b)
    port = free_port()
    syn = Synapse({"web": zk_service(zk, path, port)})
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # the default, said out loud
    syn.write_config()
    pids: list[int] = []
    try:
        syn.start()
        wait_serving(port, {"a", "b"})
        pids = syn.haproxy_pids()
        workers, reloads = syn.workers(), syn.master_reloads()
        with Load(port) as load:
            time.sleep(0.3)
            syn.signal(signal.SIGTERM)
            assert syn.process.wait(15) == 0
            assert "haproxy_left_running" in syn.log(80)
            assert not any(process_gone(pid) for pid in pids), "HAProxy must outlive synapse"
            time.sleep(0.3)  # serving with no synapse at all
            syn.start()
            wait(lambda: syn.status()["haproxy"]["haproxy_pids"]["master"] == pids[0])
            time.sleep(0.5)  # the new synapse has applied: traffic keeps flowing meanwhile
        assert load.failures == [], f"{len(load.failures)} failed: {load.failures[:5]}"
        assert load.ok > 50, "the load must have run through the restart"
        assert "haproxy_adopted" in syn.log(2000)
        # Nothing changed: no reload, no start, same worker (HAProxy's own count and ours).
        assert syn.workers() == workers
        assert syn.master_reloads() == reloads
        assert syn.metric("synapse_haproxy_reloads_total") == 0
        haproxy = syn.status()["haproxy"]
        assert (haproxy["reloads"], haproxy["starts"]) == (0, 0)
        wait_serving(port, {"a", "b"})
    finally:
        syn.process.stop(timeout=15)
        for pid in pids:  # the default left HAProxy running: stop it by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_processes_gone(pids)
        syn.cleanup()


def test_haproxy_kill9_is_restarted_at_once_with_its_servers(zk, writer, http_backend_factory):
    a, b = http_backend_factory("a"), http_backend_factory("b")
    path = "/restart/crash"
    register(writer, path, a)
    register(writer, path, b)
    port = free_port()
    with Synapse({"web": zk_service(zk, path, port)}) as syn:
        wait_serving(port, {"a", "b"})
        old = syn.haproxy_pids()
        killed = time.monotonic()
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait(lambda: wait_serving(port, {"a", "b"}, timeout=5), timeout=10)
        recovered = time.monotonic() - killed
        # Seen through a pidfd and restarted without a backoff: well under a second even on
        # a loaded 2-core machine (the bench measures ~0.1-0.3 s).
        assert recovered < 2.0, f"serving again after {recovered:.2f}s"
        # synapse confirmed the new master (HAProxy served before that; its master socket
        # is briefly away while the master re-executes itself in wait mode).
        wait(lambda: syn.status()["haproxy"]["haproxy_pids"]["master"] not in (None, *old))
        assert set(wait(syn.haproxy_pids, what="the master socket")).isdisjoint(old)
        # Restarted once, by whichever saw the death first: the supervisor's pidfd (from
        # the file: "restarted after it exited") or an apply whose read was refused (from
        # the desired state). Either way one start, no crash loop, no backoff.
        # (HAProxy answers, and shows its master, before synapse has logged the start)
        starts = wait(lambda: syn.log(10**7).count("event=haproxy_started kind=start ") >= 2)
        assert starts and syn.log(10**7).count("event=haproxy_started kind=start ") == 2
        assert syn.status()["haproxy"]["starts"] == 2
