"""A reload under long and keep-alive requests: does a reload cut them?

Every other scenario of the suite sends short GETs on new connections, and most cause no
reload at all. Here synapse gets a SIGHUP adding a service (a new frontend: one reload),
then one removing it again (a second), while clients of the unrelated ``web`` service
keep connections open: short GETs on keep-alive connections, and 2 s requests
(bench/backend.py ``/slow``) on keep-alive and on new connections, so that requests are
in flight in the old HAProxy worker at each reload. They are answered: the old worker
finishes what it has (``hard-stop-after`` bounds it; at 500 ms the 2 s requests across
each reload were cut: 8 failed of 4,626, review s40). An edge reloads for the same reasons
(a service added or removed) with the same clients, so the answer holds for it too.
"""

from __future__ import annotations

import json
import signal
import time

from bench.backend import SLOW_S
from bench.faults import SERVICE, FaultStack, Figures, send
from bench.paced import PacedClient, PacedResult
from bench.stack import listen_port, wait_for

ADDED = "extra"  # the service the SIGHUPs add and remove
IN_FLIGHT_S = SLOW_S + 0.5  # between the steps: every 2 s request straddles a reload


def _clients(port: int) -> dict[str, PacedClient]:
    timeout = SLOW_S + 3
    return {
        "keep-alive GETs": PacedClient(port, threads=2, keep_alive=True),
        "2 s requests, keep-alive": PacedClient(
            port, threads=2, interval_s=0, timeout_s=timeout, path="/slow", keep_alive=True
        ),
        "2 s requests, new connections": PacedClient(
            port, threads=2, interval_s=0, timeout_s=timeout, path="/slow"
        ),
    }


def _reload_with(stack: FaultStack, config: dict) -> None:
    """Write ``config``, SIGHUP synapse, wait until HAProxy was reloaded once more."""
    before = stack.reloads()
    stack.synapse.config_path.write_text(json.dumps(config, indent=1))
    send(stack.synapse.pid, signal.SIGHUP)
    wait_for(lambda: stack.reloads() > before, 30, "synapse's reload", interval=0.05)


def reload_in_flight(stack: FaultStack, quick: bool) -> Figures:
    figures = Figures("SIGHUP reloads with keep-alive and 2 s requests in flight")
    syn = stack.synapse
    good = syn.config_path.read_text()
    config = json.loads(good)
    backend = stack.backends[0]
    config["services"][ADDED] = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": backend.name, "host": "127.0.0.1", "port": backend.port}],
        "haproxy": {"port": listen_port(), "listen": ["mode http"]},
    }
    results: dict[str, PacedResult] = {}
    with stack.window(figures):
        clients = {name: c.start() for name, c in _clients(stack.port).items()}
        try:
            time.sleep(IN_FLIGHT_S)
            _reload_with(stack, config)  # the service added
            time.sleep(IN_FLIGHT_S)
            _reload_with(stack, json.loads(good))  # and removed
            time.sleep(IN_FLIGHT_S)
        finally:
            results = {name: c.finish() for name, c in clients.items()}
            syn.config_path.write_text(good)
    figures.failing_s = max([figures.failing_s, *(r.outage_s for r in results.values())])
    for name, result in results.items():
        figures.failed += result.failed
        figures.total += result.attempts
        for kind, count in result.errors.items():
            figures.errors[f"{name}: {kind}"] = count
        figures.notes.append(f"{name} (`{SERVICE}`): {result.failed} failed of {result.attempts}")
    figures.notes.append(
        "plus the suite's load (new connections, short GETs); the service added and removed "
        "by SIGHUP is another one: each SIGHUP is one reload"
    )
    return figures
