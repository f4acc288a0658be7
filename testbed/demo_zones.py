"""The demo's zone act: smart routing over three availability zones (docs/zone-routing.md).

A second service, ``shop``, runs in three zones (2/2/4 servers, one nerve registering
them all with ``labels: {zone: ...}``); synapse is in az1 and routes ``shop`` with
``zone_routing``. The act: az1 serves everything; az1 is lost (its servers fail their
health checks, nerve withdraws them) and traffic spreads evenly over az2 and az3, per
zone, not per server; az1 comes back and takes everything again. Shares are counted
from who answered the client's requests; reloads from synapse's /status.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from testbed.httpbackend import HttpBackend
from testbed.process import ManagedProcess, free_port, wait_until

SERVICE = "shop"
LOCAL = "az1"
LAYOUT = {"az1": 2, "az2": 2, "az3": 4}
CHECK_INTERVAL, RISE, FALL = 0.2, 2, 2
MEASURE_S = 3.0


class ZoneAct:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.backends = {
            zone: [HttpBackend(f"{zone}-{i + 1}") for i in range(count)]
            for zone, count in LAYOUT.items()
        }
        self.nerve: ManagedProcess | None = None

    def nerve_config(self, endpoints: list[str]) -> dict[str, Any]:
        """One nerve registering every server of ``shop``, each with its zone label."""
        services = {}
        for zone, backends in self.backends.items():
            for backend in backends:
                services[backend.name] = {
                    "host": "127.0.0.1",
                    "port": backend.port,
                    "labels": {"zone": zone},
                    "reporter_type": "etcd",
                    "etcd_endpoints": endpoints,
                    "etcd_path": f"/smartstack/{SERVICE}",
                    "etcd_lease_ttl": 3,
                    "check_interval": CHECK_INTERVAL,
                    "checks": [{"type": "http", "uri": "/health", "timeout": 0.5,
                                "rise": RISE, "fall": FALL}],
                }  # fmt: skip
        return {
            "instance_id": "zones",
            "admin": {"port": 0},
            "state_dir": str(self.workdir / "nerve-zones-state"),
            "services": services,
        }

    def synapse_services(self, endpoints: list[str]) -> dict[str, Any]:
        """synapse's ``shop`` service: zone-routed, zones fixed up front."""
        return {
            SERVICE: {
                "discovery": {"method": "etcd", "endpoints": endpoints,
                              "path": f"/smartstack/{SERVICE}"},
                "haproxy": {"port": self.port, "listen": ["mode http"]},
                "zone_routing": {"zones": list(LAYOUT)},
            }
        }  # fmt: skip

    def start(self, endpoints: list[str], nerve_binary: Path) -> ManagedProcess:
        """The servers of ``shop`` and their nerve; synapse is started by the demo."""
        for backends in self.backends.values():
            for backend in backends:
                backend.start()
        config = self.workdir / "nerve-zones.json"
        config.write_text(json.dumps(self.nerve_config(endpoints), indent=2))
        self.nerve = ManagedProcess(
            [str(nerve_binary), "-c", str(config)], self.workdir, "nerve-zones"
        ).start()
        return self.nerve

    def run(self, client: Sampled, reloads: Callable[[], int]) -> list[Row]:
        """The act; one row per situation. ``client`` sends requests to ``self.port``."""
        rows: list[Row] = []
        before = reloads()
        began = time.monotonic()
        client.start()
        self._until(client, {LOCAL}, began)
        rows.append(self._measure(client, f"{LOCAL} healthy (local zone)"))

        detail(f"{LOCAL} is lost: its servers fail their health checks; nerve withdraws them")
        lost = time.monotonic()
        for backend in self.backends[LOCAL]:
            backend.set_healthy(False)
        others = set(LAYOUT) - {LOCAL}
        took = self._until(client, others, lost)
        detail(f"traffic left {LOCAL} {took:.2f} s after its checks started failing")
        rows.append(self._measure(client, f"{LOCAL} lost: even spill"))

        detail(f"{LOCAL} comes back")
        back = time.monotonic()
        for backend in self.backends[LOCAL]:
            backend.set_healthy(True)
        took = self._until(client, {LOCAL}, back)
        detail(f"traffic returned to {LOCAL} {took:.2f} s after its checks passed again")
        rows.append(self._measure(client, f"{LOCAL} back"))
        client.stop()
        failed = sum(1 for s in client.since(began) if s.backend is None)
        print_table(rows, failed, reloads() - before)
        return rows

    def _until(self, client: Sampled, zones: set[str], since: float) -> float:
        """Seconds from ``since`` until the last 0.5 s of answers came from exactly ``zones``."""

        def settled() -> float | None:
            now = time.monotonic()
            recent = [s for s in client.since(max(since, now - 0.5)) if s.backend]
            seen = {_zone(s.backend) for s in recent}
            if now - since >= 0.5 and seen == zones:
                stray = [s.at for s in client.since(since) if s.backend and
                         _zone(s.backend) not in zones]  # fmt: skip
                return max([since, *stray]) - since or 0.001
            return None

        return wait_until(settled, timeout=30, what=f"traffic to exactly {sorted(zones)}",
                          interval=0.05)  # fmt: skip

    def _measure(self, client: Sampled, situation: str) -> Row:
        start = time.monotonic()
        time.sleep(MEASURE_S)
        answered = [s.backend for s in client.since(start) if s.backend]
        counts = collections.Counter(_zone(b) for b in answered)
        total = len(answered) or 1
        return Row(situation, {z: counts.get(z, 0) / total for z in LAYOUT}, len(answered))

    def stop(self) -> None:
        if self.nerve is not None:
            self.nerve.stop(timeout=10)
        for backends in self.backends.values():
            for backend in backends:
                backend.stop()


@dataclass
class Row:
    situation: str
    shares: dict[str, float]
    requests: int


class Sampled(Protocol):
    """The demo's client: requests in a thread, who answered each (None: failed)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def since(self, start: float) -> list[Any]: ...


def _zone(backend: str) -> str:
    return backend.rsplit("-", 1)[0]


def detail(text: str) -> None:
    print(f"   {text}", flush=True)


def print_table(rows: list[Row], failed: int, reloads: int) -> None:
    """Per-zone request shares of each situation, with the servers per zone."""
    head = "".join(f"{f'{z} ({n})':>10}" for z, n in LAYOUT.items())
    detail(f"{'situation':<28}{head}  requests")
    for row in rows:
        cells = "".join(f"{row.shares[z] * 100:>8.0f} %" for z in LAYOUT)
        detail(f"{row.situation:<28}{cells}  {row.requests:>8}")
    detail(f"zone act: failed requests {failed}, HAProxy reloads {reloads}")
