"""A SIGHUP that widens a service's bind address on the same port resets no connection (real
synapse, managed HAProxy 2.6; synapse.haproxy.kept_binds).

``bind_address`` 127.0.0.1 -> 0.0.0.0: the new worker could not take the old worker's
127.0.0.1 socket over and opened a wildcard one beside it; the kernel kept giving every
connection to 127.0.0.1 to the old, more specific socket, and when the old worker closed
it everything queued there was reset: 16 of 16 clients opening a connection per request,
at that reload. Now the frontend keeps binding 127.0.0.1 while that socket lives.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from haproxy_helpers import section
from synapse_e2e import Load, Synapse, wait, wait_serving
from synapse_reload import static_service

from testbed.process import free_port

CLIENTS = 16  # each opens a new connection per request, to 127.0.0.1


@contextlib.contextmanager
def _clients(port: int) -> Iterator[list[Load]]:
    """CLIENTS clients for the block; fails on any request that failed meanwhile."""
    with contextlib.ExitStack() as stack:  # (each stopped on the way out)
        loads = [stack.enter_context(Load(port, seconds=120)) for _ in range(CLIENTS)]
        time.sleep(0.5)  # (every client is sending)
        yield loads
    failures = [failure for load in loads for failure in load.failures]
    assert failures == [], f"{len(failures)} requests failed, e.g. {sorted(set(failures))[:2]}"


def _across_reload(syn: Synapse, loads: list[Load], before: int) -> int:
    """Wait for HAProxy's reload (its master's count above ``before``) and a little more:
    the requests answered after it."""
    wait(lambda: syn.master_reloads() > before, 60, "HAProxy's reload")
    answered = sum(load.ok for load in loads)
    time.sleep(1.5)  # (the old worker has closed its listeners: a reset comes at once)
    # Traffic crossed the reload: a request answered after it. Waited for, not read at the
    # 1.5 s mark (CI once had none answered by then on a loaded machine); a listener the
    # reload lost answers none, and its refusals are named.
    try:
        wait(lambda: sum(load.ok for load in loads) > answered, 10, "an answer after it")
    except TimeoutError:
        failed = sorted({failure for load in loads for failure in load.failures})
        raise AssertionError(f"none answered after the reload; failed: {failed[:3]}") from None
    return sum(load.ok for load in loads) - answered


def _reload_under_load(syn: Synapse, port: int, change: Callable[[dict[str, Any]], None]) -> int:
    """Apply ``change`` to the service's haproxy block by SIGHUP while CLIENTS clients run;
    the requests answered after HAProxy reloaded."""
    with _clients(port) as loads:
        change(syn.config["services"]["web"]["haproxy"])
        syn.write_config()
        before = syn.master_reloads()
        syn.signal(signal.SIGHUP)
        after = _across_reload(syn, loads, before)
    return after


def _binds(syn: Synapse) -> list[str]:
    return [line for line in section(syn.haproxy_config(), "frontend web") if "bind" in line]


def test_widening_the_bind_address_by_sighup_resets_no_connection(http_backend_factory):
    b1 = http_backend_factory("b1")
    port = free_port()
    with Synapse({"web": static_service(b1, port)}, startup_wait=0) as syn:
        wait_serving(port, {"b1"})

        def widen(hap: dict[str, Any]) -> None:
            hap["bind_address"] = "0.0.0.0"

        assert _reload_under_load(syn, port, widen) > 0, "served after the reload"
        assert _binds(syn) == [f"bind 127.0.0.1:{port}", f"bind 0.0.0.0:{port}"]
        assert syn.log(10**6).count("event=haproxy_bind_kept") == 1
        both = {f"127.0.0.1:{port}", f"0.0.0.0:{port}"}  # (synapse's copies: the same two)
        assert both <= set(syn.status()["haproxy"]["held_listeners"])

        def other(hap: dict[str, Any]) -> None:  # a later reload keeps the socket too
            hap["backend"] = ["timeout queue 5s"]

        assert _reload_under_load(syn, port, other) > 0
        assert _binds(syn) == [f"bind 127.0.0.1:{port}", f"bind 0.0.0.0:{port}"]

        def narrow(hap: dict[str, Any]) -> None:  # back: its own address again, once
            hap["bind_address"] = "127.0.0.1"

        assert _reload_under_load(syn, port, narrow) > 0
        assert _binds(syn) == [f"bind 127.0.0.1:{port}"]
        assert syn.log(10**6).count("event=haproxy_bind_kept") == 1
        wait(lambda: f"0.0.0.0:{port}" not in syn.status()["haproxy"]["held_listeners"])


def test_a_synapse_restarted_with_a_wider_bind_address_resets_no_connection(
    http_backend_factory,
):
    """The old address comes from the config file HAProxy runs: the new synapse adopts it."""
    b1 = http_backend_factory("b1")
    port = free_port()
    syn = Synapse({"web": static_service(b1, port)}, startup_wait=0)
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False  # (cleanup kills it)
    syn.write_config()
    with syn:
        wait_serving(port, {"b1"})
        syn.signal(signal.SIGTERM)
        assert syn.process.wait(15) == 0
        syn.config["services"]["web"]["haproxy"]["bind_address"] = "0.0.0.0"
        syn.write_config()
        with _clients(port) as loads:
            before = syn.master_reloads()
            syn.start()  # adopts the HAProxy still serving, and reloads it
            assert _across_reload(syn, loads, before) > 0
        assert "event=haproxy_adopted" in syn.log(10**6)
        assert _binds(syn) == [f"bind 127.0.0.1:{port}", f"bind 0.0.0.0:{port}"]


def _sighup(syn: Synapse, reload: bool = False) -> None:
    """Write the config and SIGHUP; back once synapse took it (and, ``reload``, once
    HAProxy reloaded with it)."""
    took, before = syn.metric("synapse_config_reloads_total", result="ok"), syn.master_reloads()
    syn.write_config()
    syn.signal(signal.SIGHUP)
    wait(lambda: syn.metric("synapse_config_reloads_total", result="ok") > took, 30, "SIGHUP")
    if reload:
        wait(lambda: syn.master_reloads() > before, 30, "HAProxy's reload")


def test_a_widened_service_removed_and_added_back_before_the_reload_resets_no_connection(
    http_backend_factory,
):
    """Review s46: api (added after the start, so not in the running file as synapse read
    it) widened, then removed by a SIGHUP with 22 others (the memory's bound forgot its
    section) and added back by the next before the removal's reload ran (restart_interval):
    its 127.0.0.1 line was gone and that reload reset 16 of 16 clients."""
    b1 = http_backend_factory("b1")
    port, web = free_port(), static_service(b1, free_port())
    web["haproxy"]["bind_address"] = "0.0.0.0"  # (the running file read at the start: none)
    with Synapse({"web": web}, startup_wait=0, haproxy={"restart_interval": 3}) as syn:
        api = syn.config["services"]["api"] = static_service(b1, port)
        _sighup(syn, reload=True)
        api["haproxy"]["bind_address"] = "0.0.0.0"
        _sighup(syn, reload=True)
        syn.config["services"].update({f"t{k}": static_service(b1, free_port()) for k in range(22)})
        _sighup(syn, reload=True)  # (the next reload waits restart_interval from here)
        with _clients(port) as loads:
            before = syn.master_reloads()
            syn.config["services"] = {"web": web}
            _sighup(syn)
            syn.config["services"]["api"] = api
            _sighup(syn)  # back, before the removal's reload
            assert _across_reload(syn, loads, before) > 0
        assert syn.master_reloads() == before + 1  # (the removal never ran)
        binds = [line for line in section(syn.haproxy_config(), "frontend api") if "bind" in line]
        assert binds == [f"bind 127.0.0.1:{port}", f"bind 0.0.0.0:{port}"]
