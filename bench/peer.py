"""Peer: EasyHAProxy against synapse, on the same containers of a private dockerd.

`make bench-peer` (`python -m bench peer`). Contenders, one after the other, each with 4
fresh busybox backends (testbed/images.py; they answer with their own name and keep serving
0.5 s after SIGTERM, an app draining):
- synapse's Docker watcher (Docker's event stream, HAProxy runtime API);
- nerve's Docker mode + etcd + synapse (HTTP check every 0.25 s, the record in etcd);
- EasyHAProxy 6.5.1 (PyPI `easyhaproxy`, installed into its own virtualenv .venv-peer by
  bench/peer_setup.py) polling Docker with its default 10 s and with 1 s.
Same load for each (bench/peer_load.py: threads sending GETs to the frontend, every attempt
recorded) during a rolling restart (each backend stopped, 1 s down, started again, 3 s
apart) and a rolling replace (a new container started, 3 s later the old one stopped and
removed, 3 s apart). HAProxy's own per-server counters (`show stat` on an admin socket,
polled every 50 ms) tell when a stopped container last got traffic and when a new one first
got it. Traffic goes only to 127.0.0.1 and to the containers of the dockerd started here.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench import Options
from bench.peer_load import RecordingClient
from bench.peer_setup import (
    LABELS,
    Traffic,
    easyhaproxy_contender,
    nerve_etcd_contender,
    private_docker,
    synapse_docker_contender,
)
from bench.report import Result
from bench.stack import Workspace

NAME = "peer"
BACKENDS = 4
PACE_S = 3.0
DOWN_S = 1.0
STALL_S = 0.5
LABEL = "bench.peer"


def run_container(docker: Any, image: str, name: str, labels: dict[str, str]) -> Any:
    return docker.containers.run(
        image,
        name=name,
        detach=True,
        network="peer",
        labels={LABEL: "web", **labels},
        environment={"NAME": name, "STOP_DELAY": "0.5"},
    )


def ip_of(container: Any) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"]["peer"]["IPAddress"]


@contextlib.contextmanager
def backends(docker: Any, image: str, prefix: str, labels: dict[str, str]) -> Iterator[list]:
    containers = [run_container(docker, image, f"{prefix}-{i}", labels) for i in range(BACKENDS)]
    try:
        yield containers
    finally:
        for c in docker.containers.list(all=True, filters={"label": f"{LABEL}=web"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)


def rolling_restart(containers: list[Any]) -> list[dict[str, Any]]:
    events = []
    for c in containers:
        addr = ip_of(c)
        t_stop = time.monotonic()
        c.stop(timeout=5)
        time.sleep(DOWN_S)
        t_call = time.monotonic()
        c.start()
        t_start = time.monotonic()  # Docker answers once the container's process runs
        new_addr = ip_of(c)  # Docker may hand the restarted container another address
        time.sleep(PACE_S)
        events.append({"name": c.name, "addr": addr, "new_addr": new_addr, "t_stop": t_stop,
                       "t_call": t_call, "t_start": t_start})  # fmt: skip
    return events


def rolling_replace(docker: Any, image: str, containers: list[Any]) -> list[dict[str, Any]]:
    events = []
    for k, old in enumerate(list(containers)):
        t_call = time.monotonic()
        new = run_container(docker, image, f"{old.name}-r{k}", LABELS)
        t_start = time.monotonic()
        new_addr = ip_of(new)
        time.sleep(PACE_S)
        old_addr = ip_of(old)
        t_stop = time.monotonic()
        old.stop(timeout=5)
        old.remove()
        containers[k] = new
        time.sleep(PACE_S)
        events.append({"old": old.name, "old_addr": old_addr, "t_stop": t_stop, "new": new.name,
                       "new_addr": new_addr, "t_call": t_call, "t_start": t_start})  # fmt: skip
    return events


def figures(
    kind: str, events: list[dict[str, Any]], traffic: Traffic, recording: Any, reloads: int
) -> dict[str, Any]:
    kept, waited = [], []
    for ev in events:
        old_addr = ev.get("old_addr", ev.get("addr"))
        window_end = ev["t_start"] if kind == "restart" else ev["t_stop"] + PACE_S
        last = traffic.last_movement(old_addr, ev["t_stop"], window_end)
        kept.append(None if last is None else last - ev["t_stop"])
        new_addr = ev.get("new_addr", ev.get("addr"))
        first = traffic.first_movement(new_addr, ev["t_start"])
        waited.append(None if first is None else first - ev["t_start"])
    attempts = recording.attempts
    return {
        "requests": len(attempts),
        "failed": recording.failed,
        "failures_by_kind": dict(Counter(a.answer for a in attempts if not a.ok).most_common(4)),
        "stalled": recording.stalled(STALL_S),
        "reloads": reloads,
        "kept_traffic_s": kept,
        "waited_for_traffic_s": waited,
        "window_s": DOWN_S if kind == "restart" else PACE_S,
        "docker_start_call_s": [ev["t_start"] - ev["t_call"] for ev in events],
    }


def _fmt_times(values: list[float | None], cap: float, none: str) -> str:
    """Seconds per backend; `none` for no movement at all, '>= cap' to the window's end."""
    parts = []
    for v in values:
        parts.append(none if v is None else (f">= {cap:.1f}" if v >= cap - 0.06 else f"{v:.2f}"))
    return ", ".join(parts) + " s"


def one_contender(docker_env: Any, ws: Workspace, factory: Any, result: Result) -> None:
    """Both scenarios, each on 4 fresh containers with a freshly started contender."""
    docker, image, sock = docker_env
    section = None
    for kind in ("restart", "replace"):
        prefix = f"{factory.key.replace('_', '-')}-{kind}"
        with backends(docker, image, prefix, LABELS) as containers, factory(ws, sock) as contender:
            if section is None:
                section = result.section(contender.title)
                section.add("1-min load average at start", os.getloadavg()[0])
            contender.wait_serving({ip_of(c) for c in containers}, 60)
            traffic = Traffic(contender.stats).start()
            reloads0 = contender.reloads()
            client = RecordingClient(contender.port, contender.host_header, max_duration_s=120)
            client.start()
            time.sleep(1.0)
            if kind == "restart":
                events = rolling_restart(containers)
            else:
                events = rolling_replace(docker, image, containers)
            time.sleep(1.0)
            recording = client.stop()
            traffic.stop()
            data = figures(kind, events, traffic, recording, contender.reloads() - reloads0)
        result.figures.setdefault(contender.key, {})[kind] = data
        kinds = ", ".join(f"{k}: {n}" for k, n in data["failures_by_kind"].items())
        section.add(f"{kind}: failed / requests", f"{data['failed']} / {data['requests']}",
                    note=kinds)  # fmt: skip
        section.add(f"{kind}: HAProxy reloads", data["reloads"])
        section.add(f"{kind}: requests stalled >= {STALL_S} s", data["stalled"])
        section.add(f"{kind}: stopped container kept getting traffic",
                    _fmt_times(data["kept_traffic_s"], data["window_s"], "0"))  # fmt: skip
        section.add(f"{kind}: new container waited for traffic",
                    _fmt_times(data["waited_for_traffic_s"], 30, "never"))  # fmt: skip
        section.add(f"{kind}: Docker's start call took (not in the wait above)",
                    _fmt_times(data["docker_start_call_s"], 1e9, "-"))  # fmt: skip


def run(opts: Options) -> Result:
    result = Result(NAME, params={"backends": BACKENDS, "pace_s": PACE_S, "down_s": DOWN_S})
    with Workspace(keep=opts.keep) as ws:
        docker_env = private_docker(ws)
        factories = [
            synapse_docker_contender,
            nerve_etcd_contender,
            easyhaproxy_contender(10),
            easyhaproxy_contender(1),
        ]
        only = os.environ.get("BENCH_PEER_ONLY")  # e.g. easyhaproxy_1s, while debugging
        for factory in factories:
            if only and factory.key != only:
                continue
            with result.attempt(factory.title):
                one_contender(docker_env, ws, factory, result)
    result.notes += [
        "each backend keeps serving 0.5 s after SIGTERM (an app draining); restart: 1 s "
        "down then started again, 3 s apart; replace: new container, 3 s, old one stopped "
        "and removed, 3 s",
        "kept getting traffic: last move of HAProxy's counters (sessions, connection errors, "
        "retries) for the stopped container's address after the stop (restart: until it is "
        "started again; replace: within 3 s); '>=' means until the end of that window",
        "waited for traffic: from Docker's answer to the start call (the container runs) to "
        "HAProxy's first session to it",
        "EasyHAProxy regenerates haproxy.cfg and starts a new HAProxy (-sf) on every change "
        "it sees; reloads are its 'New configuration found' log lines",
    ]
    return result


if __name__ == "__main__":  # `python -m bench.peer` = `python -m bench peer`
    import sys

    from bench.__main__ import main

    sys.exit(main(["peer", *sys.argv[1:]]))
