"""The edge: many services on one shared frontend, routes changed under load, TLS handshakes.

synapse runs a managed HAProxy with SERVICES services (``base`` discovery: their
``default_servers`` point at three bench/backend.py processes), each routed by three hosts
(``s<i>-h<j>.edge.test``) on one shared frontend, which also terminates TLS (one
certificate made by a throw-away CA in ``cert_dir``). While wrk keeps a steady load on one
routed host, routes are added and removed one at a time: a host is appended to a service
in synapse's config file (a new file renamed over it, as docs/configuration.md asks) and
synapse gets SIGHUP; the time until a request with that Host is routed (200), then,
removed again, until it gets the 404. The clock starts with the
SIGHUP (the file is written just before): it holds synapse re-reading its config. Reloads
are read from the master CLI; failed requests are wrk's socket errors plus non-2xx answers.

TLS: handshakes per second from a bounded Python ``ssl`` client loop against the TLS
bind (TLS 1.2, so that session resumption is a session id): full handshakes (no session
offered) and resumed ones (the first connection's session offered every time). The client
runs on the same two cores as HAProxy: a sanity figure, not HAProxy's ceiling.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import time
from typing import Any

from bench import Options
from bench.load import Wrk, under_load
from bench.report import Result, Target, summary_ms
from bench.stack import Backend, DaemonError, Synapse, Workspace, listen_port
from synapse.config import load_synapse_config, service_cache
from testbed.tls import make_server_pem, make_test_pki

NAME = "edge"
HOSTS_PER_SERVICE = 3
BACKENDS = 3
TARGET_ROUTABLE_MS = Target("<=", 50, "ms")
TARGET_ZERO = Target("==", 0)
CONNECTIONS, DELAY_MS = 8, 10  # about 800 requests/s of steady load
POLL_S = 0.002  # how often a new route is probed
ROUTE_TIMEOUT_S = 10.0  # a route not routable after this fails the run
TLS_SECONDS, TLS_MAX = 3.0, 3000  # each handshake loop: bounded in time and in count


def host(service: int, index: int) -> str:
    return f"s{service}-h{index}.edge.test"


def services_config(count: int, backends: list[Backend]) -> dict[str, dict[str, Any]]:
    services = {}
    for i in range(count):
        backend = backends[i % len(backends)]
        services[f"s{i}"] = {
            "discovery": {"method": "base"},
            "default_servers": [{"name": backend.name, "host": "127.0.0.1", "port": backend.port}],
            "haproxy": {"routes": {"hosts": [host(i, j) for j in range(HOSTS_PER_SERVICE)]}},
        }
    return services


def status_for(port: int, name: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/", headers={"Host": name})
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def time_until(port: int, name: str, status: int, syn: Synapse) -> float:
    """Seconds until ``name`` answers ``status`` (probed every POLL_S, bounded)."""
    began = time.perf_counter()
    while time.perf_counter() - began < ROUTE_TIMEOUT_S:
        if status_for(port, name) == status:
            return time.perf_counter() - began
        time.sleep(POLL_S)
    syn.check_alive()
    raise DaemonError(f"{name} did not answer {status} within {ROUTE_TIMEOUT_S} s\n{syn.logs()}")


def write_config(syn: Synapse) -> None:
    """The operator's edit, done before the clock starts: serializing 500 services with
    ``indent`` takes the bench's own Python 10-35 ms, which is not synapse's time. Written
    as docs/configuration.md asks, a new file renamed over the old one: a file written in
    place a moment ago holds the SIGHUP 2 s (smartstack.reload_settle: it may be a prefix),
    and this measured that hold (2,010 ms) instead of the route change."""
    fresh = syn.config_path.with_name(syn.config_path.name + ".new")
    fresh.write_text(json.dumps(syn.config, indent=1))
    os.replace(fresh, syn.config_path)


def sighup(syn: Synapse) -> float:
    """SIGHUP to synapse; the moment it was sent (the clock's start)."""
    began = time.perf_counter()
    os.kill(syn.pid, signal.SIGHUP)
    return began


def route_changes(syn: Synapse, port: int, changes: int) -> dict[str, list[float]]:
    """Add a host to a service, then remove it, ``changes`` times (different services)."""
    timings: dict[str, list[float]] = {"added": [], "removed": []}
    services = syn.config["services"]
    step = max(1, len(services) // changes)
    for k in range(changes):
        name = f"new{k}.edge.test"
        hosts = services[f"s{(k * step) % len(services)}"]["haproxy"]["routes"]["hosts"]
        hosts.append(name)
        write_config(syn)
        began = sighup(syn)
        time_until(port, name, 200, syn)
        timings["added"].append(time.perf_counter() - began)
        hosts.remove(name)
        write_config(syn)
        began = sighup(syn)
        time_until(port, name, 404, syn)
        timings["removed"].append(time.perf_counter() - began)
    return timings


def config_load_s(syn: Synapse) -> tuple[float, float]:
    """How long reading synapse's config file takes in this process (best of 3 each): the
    whole file (synapse's start), and again after one host changed with the cache that
    synapse keeps (its SIGHUP: only the changed service is validated again)."""
    whole = reread = float("inf")
    cache = service_cache()
    hosts = syn.config["services"]["s0"]["haproxy"]["routes"]["hosts"]
    for k in range(3):
        began = time.perf_counter()
        load_synapse_config(syn.config_path)
        whole = min(whole, time.perf_counter() - began)
        load_synapse_config(syn.config_path, cache=cache)
        hosts.append(f"reread{k}.edge.test")
        write_config(syn)
        began = time.perf_counter()
        load_synapse_config(syn.config_path, cache=cache)
        reread = min(reread, time.perf_counter() - began)
        hosts.pop()
        write_config(syn)
    return whole, reread


def handshakes(port: int, resumed: bool, limit_s: float, limit: int) -> tuple[float, int, int]:
    """(handshakes per second, handshakes, how many resumed a session)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    session = None
    done = reused = 0
    began = time.perf_counter()
    while done < limit and time.perf_counter() - began < limit_s:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with context.wrap_socket(
            raw, server_hostname="edge.test", session=session if resumed else None
        ) as conn:
            done += 1
            reused += conn.session_reused
            if resumed and session is None:
                session = conn.session
    elapsed = time.perf_counter() - began
    return done / elapsed, done, reused


def scenario(opts: Options, result: Result, count: int, changes: int) -> None:
    with Workspace(opts.keep) as ws:
        backends = [Backend(ws, f"b{i}").start() for i in range(BACKENDS)]
        pki, certs = ws.dir("pki"), ws.dir("certs")
        make_test_pki(pki)
        (certs / "edge.pem").write_text(make_server_pem(pki, "edge", ["edge.test"]))
        port, tls_port = listen_port(), listen_port()
        syn = Synapse(
            ws,
            services_config(count, backends),
            restart_interval=opts.restart_interval,
            log_level=opts.log_level,
            extra={
                "haproxy": {
                    "shared_frontend": [f"bind 127.0.0.1:{port}"],
                    "tls": {"cert_dir": str(certs), "port": tls_port, "bind_address": "127.0.0.1"},
                }
            },
        ).start(timeout=300)
        syn.wait(lambda: status_for(port, host(count - 1, 0)) == 200, 120, "the last route")
        wrk = Wrk(
            f"http://127.0.0.1:{port}/",
            ws.dir("wrk"),
            max_duration_s=600,
            connections=CONNECTIONS,
            delay_ms=DELAY_MS,
            headers=[f"Host: {host(0, 0)}"],
        )
        with under_load(syn, wrk, opts.restart_interval) as measured:
            time.sleep(1.0)  # steady state first
            timings = route_changes(syn, port, changes)
            time.sleep(0.5)
        load, reloads = measured.load, measured.reloads
        assert load is not None
        whole, reread = config_load_s(syn)
        if load.requests == 0:
            raise DaemonError(f"wrk completed no request through HAProxy\n{syn.logs()}")
        tls_limit = opts.size(TLS_MAX, 200)
        full = handshakes(tls_port, False, TLS_SECONDS, tls_limit)
        resumed = handshakes(tls_port, True, TLS_SECONDS, tls_limit)

    section = result.section("routes changed under load")
    added, removed = summary_ms(timings["added"]), summary_ms(timings["removed"])
    note = "SIGHUP (config re-read) -> routed"
    section.add("host added -> routable (p50)", added["p50_ms"], "ms", note=note)
    section.add("host added -> routable (max)", added["max_ms"], "ms", TARGET_ROUTABLE_MS)
    section.add("host removed -> 404 (max)", removed["max_ms"], "ms", TARGET_ROUTABLE_MS)
    section.add("of which: config file re-read", reread * 1000, "ms",
                note="one host changed, synapse's per-service cache; best of 3")  # fmt: skip
    section.add("config file read whole", whole * 1000, "ms",
                note="every service validated (synapse's start); best of 3")  # fmt: skip
    section.add("requests", load.requests, note=f"{load.rate:,.0f}/s for {load.duration_s:.1f} s")
    section.add("failed requests", load.failed, target=TARGET_ZERO,
                note=", ".join(f"{k} {v}" for k, v in load.errors.items() if v))  # fmt: skip
    section.add("HAProxy reloads", reloads, target=TARGET_ZERO)
    tls = result.section("TLS handshakes (Python client, TLS 1.2, same 2 cores)")
    tls.add("full handshakes", full[0], "/s", note=f"{full[1]} handshakes")
    tls.add("resumed handshakes", resumed[0], "/s", note=f"{resumed[2]} of {resumed[1]} resumed")
    result.figures["routes"] = {
        "timings_ms": {k: [round(v * 1000, 1) for v in vs] for k, vs in timings.items()},
        "load": load.__dict__ | {"failed": load.failed, "rate": load.rate},
        "reloads": reloads,
        "config_load_ms": round(reread * 1000, 1),
        "config_load_whole_ms": round(whole * 1000, 1),
    }
    result.figures["tls"] = {"full": full, "resumed": resumed}


def run(opts: Options) -> Result:
    count, changes = opts.size(500, 50), opts.size(20, 3)
    result = Result(
        NAME,
        params={
            "services": count,
            "hosts_per_service": HOSTS_PER_SERVICE,
            "backends": BACKENDS,
            "route_changes": changes,
            "wrk_connections": CONNECTIONS,
            "wrk_delay_ms": DELAY_MS,
        },
    )
    with result.attempt("edge"):
        scenario(opts, result, count, changes)
    result.notes.append(
        "routable times run from the SIGHUP (the config file written just before) and include "
        "synapse re-reading it; probes every 2 ms"
    )
    return result
