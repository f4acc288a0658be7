"""Failure to removal: a backend process is killed -> nerve sees it -> traffic stops.

Three backends, each with its own nerve (HTTP check every `check_interval`, withdrawn
after `fall` failures), synapse in runtime mode, wrk sending a steady load. Each round
SIGKILLs one backend and polls every 5 ms: its znode (nerve's withdrawal), its HAProxy
state (synapse's removal) and HAProxy's per-server counters (sessions, connection
errors, retries, redispatches: the last time any of them moved is when traffic to the
dead server stopped). The backend is then restarted and re-registered for the next
round. Expected: about check_interval x fall, since nerve needs `fall` failed checks.

HAProxy runs with synapse's managed-mode defaults (no `retries`/`redispatch` lines of
our own): `retry-on conn-failure empty-response`, `option redispatch 1`,
so the requests caught by a kill are retried on another server. The load runs for at
least MIN_LOAD_S (full mode) so that >= 10,000 requests are sent; the table gives the
failed requests (non-2xx/3xx answers plus wrk's socket errors) of all requests sent.
"""

from __future__ import annotations

import time
from typing import Any

from bench import Options
from bench.load import Wrk
from bench.registry import ZkRegistry
from bench.report import Result, Target, summary_ms
from bench.stack import (
    DEFAULTS,
    Backend,
    Nerve,
    Synapse,
    Workspace,
    listen_port,
    nerve_http_service,
    service_block,
    wait_for,
)

NAME = "failure"
SERVICE = "web"
PATH = "/bench/web"
CHECK_INTERVAL, RISE, FALL = 0.5, 2, 2
POLL_S = 0.005
QUIET_S = 1.0  # keep watching the counters this long after HAProxy removed the server
COUNTERS = ("stot", "econ", "wretr", "wredis")
MIN_LOAD_S = 15.0  # ~850 requests/s: >= 10,000 requests in full mode
MIN_REQUESTS = 10_000
# The bench's usual defaults without their retries: measure what synapse adds itself.
FAILURE_DEFAULTS = [d for d in DEFAULTS if not d.startswith(("retries", "option redispatch"))]


def _serving(syn: Synapse) -> set[tuple[str, int]]:
    return syn.haproxy.serving(SERVICE).get(SERVICE, set())


def _counters(syn: Synapse, address: tuple[str, int]) -> tuple[int, ...]:
    row = syn.haproxy.server_stats(SERVICE).get(address, {})
    return tuple(int(row.get(c) or 0) for c in COUNTERS)


def one_kill(
    reg: ZkRegistry, syn: Synapse, victim: Backend, instance: str, watch: list
) -> dict[str, float]:
    """Kill `victim`; seconds until nerve withdrew it, HAProxy removed it, traffic stopped."""
    address = ("127.0.0.1", victim.port)
    last = _counters(syn, address)
    killed = time.perf_counter()
    victim.kill()
    out: dict[str, float] = {}
    last_traffic = killed
    deadline = killed + 30
    while True:
        now = time.perf_counter()
        if "nerve_withdrew" not in out and not any(
            c.startswith(f"{instance}_") for c in reg.client.get_children(PATH)
        ):
            out["nerve_withdrew"] = now - killed
        if "haproxy_removed" not in out and address not in _serving(syn):
            out["haproxy_removed"] = now - killed
        counters = _counters(syn, address)
        if counters != last:
            last, last_traffic = counters, now
        if "haproxy_removed" in out and now - killed > out["haproxy_removed"] + QUIET_S:
            break
        if now > deadline:
            raise TimeoutError(
                f"{victim.name} still in HAProxy 30 s after it was killed\n{syn.logs()}"
            )
        time.sleep(POLL_S)
    out["traffic_stopped"] = last_traffic - killed
    victim.start()
    wait_for(lambda: address in _serving(syn), 60, f"{victim.name} back in HAProxy", watch)
    return out


# Variants: synapse's managed defaults, then with `observe` (HAProxy marks the server down
# on its first failed connection, before nerve's checks catch up; it then needs its own
# checks, every 500 ms here, to bring the server back).
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("", {}),
    (
        ", observe layer4 (mark-down after 1 error)",
        {
            "observe": {"layer": "layer4", "error_limit": 1, "on_error": "mark-down"},
            "health_check": {"inter_ms": 500},
        },
    ),
)


def _measure(opts: Options, rounds: int, haproxy: dict[str, Any]) -> tuple:
    """(samples, load, retry lines) of `rounds` kills under steady load."""
    with Workspace(opts.keep) as ws:
        reg = ZkRegistry(ws)
        backends = [Backend(ws, f"b{i}").start() for i in range(3)]
        nerves = [
            Nerve(
                ws,
                f"host{i}",
                {SERVICE: nerve_http_service(reg.server, PATH, b.port, CHECK_INTERVAL, RISE, FALL)},
                opts.log_level,
            ).start()
            for i, b in enumerate(backends)
        ]
        port = listen_port()
        service = service_block(reg.discovery(PATH), port)
        service["haproxy"].update(haproxy)
        syn = Synapse(
            ws,
            {SERVICE: service},
            log_level=opts.log_level,
            extra={"haproxy": {"defaults": FAILURE_DEFAULTS}},
        ).start()
        watch = [syn.proc, *(n.proc for n in nerves)]
        want = {("127.0.0.1", b.port) for b in backends}
        wait_for(lambda: _serving(syn) == want, 60, "HAProxy to serve all 3 backends", watch)
        retry_lines = _retry_lines(syn)
        wrk = Wrk(
            f"http://127.0.0.1:{port}/",
            ws.dir("wrk"),
            max_duration_s=300,
            connections=8,
            delay_ms=8,
        ).start()
        load_started = time.monotonic()
        try:
            time.sleep(0.5)
            samples = [
                one_kill(reg, syn, backends[r % 3], f"host{r % 3}", watch) for r in range(rounds)
            ]
            if not opts.quick:
                time.sleep(max(0.0, load_started + MIN_LOAD_S - time.monotonic()))
        finally:
            load = wrk.finish()
    return samples, load, retry_lines


def run(opts: Options) -> Result:
    rounds = opts.size(6, 1)
    expected_ms = CHECK_INTERVAL * FALL * 1000
    result = Result(
        NAME,
        params={"rounds": rounds, "check_interval_s": CHECK_INTERVAL, "fall": FALL, "rise": RISE},
    )
    for suffix, haproxy in VARIANTS:
        samples, load, retry_lines = _measure(opts, rounds, haproxy)
        section = result.section(f"ZooKeeper, runtime API, kill -9 of a backend{suffix}")
        section.add("rounds", rounds)
        for key, label in (
            ("nerve_withdrew", "kill -> nerve withdrew (znode gone)"),
            ("haproxy_removed", "kill -> out of HAProxy"),
            ("traffic_stopped", "kill -> last request sent to it"),
        ):
            stats = summary_ms([s[key] for s in samples])
            section.add(f"{label} p50", stats["p50_ms"], "ms")
            section.add(
                f"{label} max",
                stats["max_ms"],
                "ms",
                Target("<=", expected_ms, "ms") if key != "nerve_withdrew" else None,
            )
        section.add("check_interval x fall", expected_ms, "ms")
        section.add(
            "client requests sent",
            load.requests,
            target=None if opts.quick else Target(">=", MIN_REQUESTS),
        )
        errors = ", ".join(f"{k} {v}" for k, v in load.errors.items() if v) or "none"
        section.add(
            "client requests failed",
            load.failed,
            target=Target("==", 0),
            note=f"of {load.attempts:,}; non-2xx + socket errors: {errors}",
        )
        key = "rounds" if not suffix else "rounds_observe"
        result.figures[key] = [{k: round(v * 1000, 1) for k, v in s.items()} for s in samples]
        result.figures["load" if not suffix else "load_observe"] = load.__dict__ | {
            "failed": load.failed
        }
        if not suffix:
            result.notes.append(
                "HAProxy config: synapse's managed defaults, " + "; ".join(retry_lines)
            )
    result.notes.append(
        "the kill lands at a random phase of the check interval: nerve needs "
        "`fall` failed checks, so about (fall-1..fall) x check_interval"
    )
    result.notes.append(
        "observe: `default-server check inter 500 rise 2 fall 2 observe layer4 error-limit 1 "
        "on-error mark-down` (per-service `observe` and `health_check` keys)"
    )
    return result


def _retry_lines(syn: Synapse) -> list[str]:
    """The retry lines synapse generated for the service's backend (read from its file)."""
    text = syn.haproxy_cfg.read_text() if syn.haproxy_cfg.exists() else ""
    keys = ("retries", "retry-on", "option redispatch", "http-request disable-l7-retry")
    return [line.strip() for line in text.splitlines() if line.strip().startswith(keys)]
