"""The demo's zone act: smart routing over three availability zones (docs/zone-routing.md).

A second service, ``shop``, runs in three zones (2/2/4 servers, one nerve registering
them all with ``labels: {zone: ...}``); synapse is in az1 and routes ``shop`` with
``zone_routing``. The act: az1 serves everything; az1 is lost (its servers die) and
traffic spreads evenly over az2 and az3, per zone, not per server: HAProxy moves it by
itself at the first refused connection (the other zones are its backups), before nerve
withdraws the dead servers; az1 comes back and takes everything again. Beside it, zone
stickiness (``sticky: SRVZONE``, ``header: X-Zone``): two more clients keep the cookie
their answers set, one starting with ``SRVZONE=az3`` (served only in az3), one without
(pinned to az1 by its first answer, re-pinned when az1 is lost, and staying there).
Shares are counted from who answered each client's requests, cookies from the answers'
Set-Cookie headers; reloads from synapse's /status.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from testbed.demo_client import detail
from testbed.httpbackend import HttpBackend
from testbed.process import ManagedProcess, free_port, wait_until

SERVICE = "shop"
LOCAL = "az1"
LAYOUT = {"az1": 2, "az2": 2, "az3": 4}
CHECK_INTERVAL, RISE, FALL = 0.2, 2, 2
MEASURE_S = 3.0
COOKIE, HEADER = "SRVZONE", "X-Zone"
PINNED = "az3"  # the zone the pinned client's cookie names from the start


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
                "zone_routing": {"zones": list(LAYOUT), "sticky": COOKIE, "header": HEADER},
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

    def run(self, make_client: Callable[..., Sampled], reloads: Callable[[], int]) -> list[Row]:
        """The act; one row per situation and client. ``make_client(cookies=, headers=)``
        makes a client sending requests to ``self.port``."""
        before = reloads()
        self._header_requests(make_client(headers={HEADER: "az2"}))  # no cookie jar
        client = make_client()
        sticky = {f"{COOKIE}={PINNED}": make_client(cookies={COOKIE: PINNED}),
                  "new client": make_client(cookies={})}  # fmt: skip
        everyone = [client, *sticky.values()]
        rows: dict[str, list[Row]] = {}  # per client, one row per situation
        began = time.monotonic()
        for each in everyone:
            each.start()
        self.until(client, {LOCAL}, began)
        self._cookies_set("new client", sticky["new client"], began)
        self._measure(client, sticky, f"{LOCAL} healthy (local zone)", rows)

        detail(f"{LOCAL} is lost: its servers die (nerve withdraws them when its checks fail)")
        lost = time.monotonic()
        for backend in self.backends[LOCAL]:
            backend.stop()
        others = set(LAYOUT) - {LOCAL}
        took = self.until(client, others, lost)
        when = "at once" if took <= 0.001 else f"{took:.3f} s after its servers died"
        detail(f"traffic left {LOCAL} {when}: HAProxy moved it at the first refused "
               "connection (the other zones are its backups)")  # fmt: skip
        self._cookies_set("new client", sticky["new client"], lost)
        self._measure(client, sticky, f"{LOCAL} lost: even spill", rows)

        detail(f"{LOCAL} comes back")
        back = time.monotonic()
        for backend in self.backends[LOCAL]:
            backend.start()
        took = self.until(client, {LOCAL}, back)
        detail(f"traffic returned to {LOCAL} {took:.2f} s after its servers started again "
               "(nerve's and HAProxy's checks)")  # fmt: skip
        self._cookies_set("new client", sticky["new client"], back)
        self._measure(client, sticky, f"{LOCAL} back", rows)
        for each in everyone:
            each.stop()
        failed = sum(1 for c in everyone for s in c.since(began) if not s.backend)
        table = [row for per_client in rows.values() for row in per_client]
        print_table(table, failed, reloads() - before)
        return table

    def _header_requests(self, client: Sampled, count: int = 4) -> None:
        """A few requests naming az2 by the header, without a cookie: where they went."""
        answers = [client.request() for _ in range(count)]
        served = collections.Counter(_zone(a.backend) if a.backend else "FAILED" for a in answers)
        cookies = collections.Counter(_cookie(a.set_cookie) for a in answers)
        detail(f"{count} requests with '{HEADER}: az2', no cookie: served in "
               f"{_counts(served)}; {COOKIE} set to {_counts(cookies)}")  # fmt: skip

    def _cookies_set(self, name: str, client: Sampled, since: float) -> None:
        """Print the Set-Cookie answers ``client`` got since ``since`` (a few at most)."""
        for line in set_cookie_lines(name, list(client.samples), client.cookies, since):
            detail(line)

    def until(self, client: Sampled, zones: set[str], since: float) -> float:
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

    def _measure(
        self,
        client: Sampled,
        sticky: dict[str, Sampled],
        situation: str,
        rows: dict[str, list[Row]],
    ) -> None:
        """Who answered each client in the next MEASURE_S, a row each in ``rows`` (the
        sticky clients' rows: which cookie values their requests carried)."""
        start = time.monotonic()
        time.sleep(MEASURE_S)
        step = situation.split(":")[0].replace(" (local zone)", "")
        rows.setdefault("", []).append(_row(situation, client.since(start)))
        for name, each in sticky.items():
            sent = sorted({s.sent.get(COOKIE, "none") for s in each.since(start)})
            row = _row(f"{name} | {step}", each.since(start), f"sent {COOKIE}={','.join(sent)}")
            rows.setdefault(name, []).append(row)

    def stop(self) -> None:
        if self.nerve is not None:
            self.nerve.stop(timeout=10)
        for backends in self.backends.values():
            for backend in backends:
                backend.stop()


def set_cookie_lines(
    name: str, samples: list[Any], jar: dict[str, str] | None, since: float
) -> list[str]:
    """What the answers since ``since`` set: judged by when each answer came, since a
    request sent just before an event (az1 lost) can be answered after it, elsewhere."""
    events = [s for s in samples if s.set_cookie and s.answered >= since]
    lines = []
    for s in events[:3]:
        sent, took = s.sent.get(COOKIE, "none"), s.answered - since
        lines.append(f"{name}: cookie {sent}, answered by {s.backend}, {took:.2f} s in: "
                     f"Set-Cookie: {s.set_cookie}")  # fmt: skip
    if len(events) > 3:
        lines.append(f"{name}: {len(events) - 3} more Set-Cookie answers")
    if not events:
        lines.append(
            f"{name}: no Set-Cookie in this step, it keeps {COOKIE}={(jar or {}).get(COOKIE)}"
        )
    return lines


@dataclass
class Row:
    situation: str
    shares: dict[str, float]
    requests: int
    note: str = ""  # the sticky clients: the cookie values their requests carried


def _row(situation: str, samples: list[Any], note: str = "") -> Row:
    answered = [s.backend for s in samples if s.backend]
    counts = collections.Counter(_zone(b) for b in answered)
    total = len(answered) or 1
    return Row(situation, {z: counts.get(z, 0) / total for z in LAYOUT}, len(answered), note)


class Sampled(Protocol):
    """The demo's client: requests in a thread, who answered each (None: failed), the
    cookies each request carried and the Set-Cookie of each answer."""

    cookies: dict[str, str] | None  # its cookie jar, kept from Set-Cookie (None: no jar)
    samples: list[Any]  # every request so far, in the order sent

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def since(self, start: float) -> list[Any]: ...
    def request(self) -> Any: ...


def _zone(backend: str) -> str:
    return backend.rsplit("-", 1)[0]


def _cookie(set_cookie: str | None) -> str:
    """The zone a Set-Cookie header sets ``COOKIE`` to ("not set" without one)."""
    name, _, value = (set_cookie or "").split(";", 1)[0].partition("=")
    return value if name == COOKIE else "not set"


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{key} x{n}" for key, n in sorted(counter.items()))


def print_table(rows: list[Row], failed: int, reloads: int) -> None:
    """Per-zone request shares of each situation, with the servers per zone."""
    head = "".join(f"{f'{z} ({n})':>10}" for z, n in LAYOUT.items())
    detail(f"{'situation':<28}{head}  requests")
    for before, row in zip([None, *rows], rows, strict=False):
        if row.note and not (before and before.note):
            detail(f"clients keeping the {COOKIE} cookie their answers set ({COOKIE}={PINNED}: "
                   "starts with it; new client: starts without):")  # fmt: skip
        cells = "".join(f"{row.shares[z] * 100:>8.0f} %" for z in LAYOUT)
        detail(f"{row.situation:<28}{cells}  {row.requests:>8}  {row.note}".rstrip())
    detail(f"zone act: failed requests {failed}, HAProxy reloads {reloads}")
