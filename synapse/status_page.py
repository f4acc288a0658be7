"""The status page an operator leaves open: static HTML at ``/``, data at ``/status/page.json``.

The HTML (``templates/status.html``, packaged like the HAProxy template) is small and
never changes; its script fetches ``/status/page.json`` every few seconds and updates
the page in place (the scroll position, the filter and the open services stay). The JSON
is compact on purpose: about 250 bytes per server, so 1,000 services stay well under a
megabyte (tests/system/test_status_page.py holds it to that).

Per service it carries the summary (servers UP/total from HAProxy, the zone split,
when it last changed) and per server its state, weight, origin, zone and live traffic:
request and 5xx rates from HAProxy's `show stat` (``synapse.haproxy.traffic``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import Any

from smartstack import httpserver as web
from smartstack.registry_address import join_host_port
from synapse.haproxy.traffic import Traffic, TrafficSampler

PAGE_TEMPLATE = "status.html"
DATA_PATH = "/status/page.json"
# What the page shows of /status's "haproxy" (not the running backends: per service already)
HAPROXY_KEYS = ("mode", "haproxy_version", "reloads", "starts", "last_reload", "validation_error",
                "last_reload_error", "runtime_error", "config_write_error", "error")  # fmt: skip
ZoneRows = Iterable[tuple[str, str, str, str, str]]  # synapse.server_info rows


def load_page() -> str:
    return (resources.files("synapse.templates") / PAGE_TEMPLATE).read_text(encoding="utf-8")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def stats_url(bind: str, uri: str) -> str:
    """Where HAProxy's stats page answers (a wildcard bind answers on 127.0.0.1 too)."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("", "*", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return (
        f"http://{join_host_port(host, int(port))}{uri}"
        if port.isdigit()
        else f"http://{bind}{uri}"
    )


class ChangeTracker:
    """When each service's servers or their states last changed, as seen by the page."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[Any, float]] = {}

    def changed_at(self, service: str, signature: Any, now: float) -> float | None:
        """None until a change was seen (the first look is no change)."""
        seen = self._seen.get(service)
        if seen is None:
            self._seen[service] = (signature, 0.0)
            return None
        if seen[0] != signature:
            self._seen[service] = (signature, now)
            return now
        return seen[1] or None

    def keep_only(self, services: Iterable[str]) -> None:
        keep = set(services)
        self._seen = {name: seen for name, seen in self._seen.items() if name in keep}


def zone_split(zones: Any) -> list[dict[str, Any]] | None:
    """The ``zones`` object of /status (zone routing) as [{z, up, t, active, evacuated}].

    Accepts a list of zone objects, an object keyed by zone, or either under ``zones``.
    """
    if isinstance(zones, dict) and isinstance(zones.get("zones"), list | dict):
        zones = zones["zones"]
    if isinstance(zones, dict):
        zones = [{"zone": name, **(v if isinstance(v, dict) else {})} for name, v in zones.items()]
    if not isinstance(zones, list):
        return None
    out = []
    for entry in zones:
        if not isinstance(entry, dict) or "zone" not in entry:
            continue
        total = entry.get("servers")
        total = len(total) if isinstance(total, list) else total
        up = next((entry[k] for k in ("usable", "up", "healthy") if k in entry), None)
        zone = str(entry["zone"])
        active, evacuated = entry.get("active"), entry.get("evacuated")
        out.append({"z": zone, "up": up, "t": total, "active": active, "evacuated": evacuated,
                    "share": entry.get("share"), "why": entry.get("why")})  # fmt: skip
    return out


def zone_mode(zones: Any) -> dict[str, Any] | None:
    """Zone routing's decision for the service line: mode, local zone, evacuated zones."""
    if not isinstance(zones, dict) or "mode" not in zones:
        return None
    evacuated = zones.get("evacuated")
    mode = {"mode": zones.get("mode"), "local": zones.get("local_zone"),
            "evacuated": evacuated if isinstance(evacuated, list) else []}  # fmt: skip
    signals = zones.get("signals")
    if isinstance(signals, dict) and signals:  # zone signals: one short line
        mode["sig"] = zone_signals(signals)
    return mode


def zone_signals(signals: dict[str, Any]) -> str:
    """``cookie SRVZONE · header X-Zone · 2 addresses`` for the service line."""
    parts = [f"cookie {signals['sticky']}"] if signals.get("sticky") else []
    parts += [f"header {signals['header']}"] if signals.get("header") else []
    addresses = signals.get("zone_of_address")
    if isinstance(addresses, dict) and addresses:
        parts.append(f"{len(addresses)} address{'es' if len(addresses) > 1 else ''}")
    return " · ".join(parts)


def _zones_of_servers(servers: list[list[Any]]) -> list[dict[str, Any]] | None:
    """Without zone routing data: the split by the servers' zone labels, if they have any."""
    split: dict[str, list[int]] = {}
    for row in servers:
        counts = split.setdefault(row[5], [0, 0])
        counts[0] += row[2] == "UP"
        counts[1] += 1
    if set(split) <= {"unknown"}:
        return None
    return [{"z": z, "up": up, "t": t} for z, (up, t) in sorted(split.items())]


# A server is a list (compact: a thousand services are a few thousand servers), in this order:
SERVER_COLUMNS = ("name", "address", "state", "weight", "origin", "zone",
                  "req_rate", "err_rate", "errors_5xx", "state_age")  # fmt: skip


def _server_row(
    server: Mapping[str, Any], running: Mapping[str, Any], seen: Traffic | None, zone: str
) -> list[Any]:
    """One server as SERVER_COLUMNS; HAProxy's state (live from `show stat` when there)
    and weight when it runs the server."""
    address = join_host_port(server["host"], server["port"])
    weight = running.get("weight", server.get("weight"))
    state = (seen.state if seen else None) or running.get("state")  # the live one first
    row = [server["name"], address, state, weight, server.get("origin"), zone]
    if seen is None:
        return [*row, None, None, None, None]
    rates = [_round(seen.req_rate), _round(seen.err_rate)]
    return [*row, *rates, seen.errors_5xx, seen.last_change]


def service_data(
    name: str,
    view: Mapping[str, Any],
    traffic: Mapping[tuple[str, str], Traffic],
    zones: Mapping[tuple[str, str], str],
) -> tuple[dict[str, Any], Any]:
    """One service for the page, and the signature whose change is "a change"."""
    backend = view.get("backend", name)
    haproxy = view.get("haproxy") or {}
    running = haproxy.get("servers") or {}
    servers = []
    for server in view.get("servers") or []:
        key = server["name"]
        seen = traffic.get((backend, key))
        zone = zones.get((name, key), "unknown")
        servers.append(_server_row(server, running.get(key) or {}, seen, zone))
    watcher = view.get("watcher") or {}
    data = {
        "n": name,
        "o": view.get("origin"),
        "hd": bool(view.get("haproxy_disabled")),
        "hr": view.get("haproxy") is not None,  # HAProxy runs its backend
        # just reloaded or started: its servers not read yet (states only from `show stat`)
        "ur": bool(haproxy.get("unread")),
        "w": {
            "m": watcher.get("method"),
            "c": watcher.get("connected"),
            "e": watcher.get("error") or _typo(view, watcher),  # (a problem: the row is red)
            "sk": watcher.get("skipped_records") or 0,
        },
        "up": sum(row[2] == "UP" for row in servers),
        "t": len(servers),
        "z": zone_split(view["zones"]) if view.get("zones") else _zones_of_servers(servers),
        "zm": zone_mode(view.get("zones")),
        # haproxy -c refused this service's block: it runs its last good one (isolation.py)
        "iso": (view.get("config_isolated") or {}).get("error")
        if view.get("config_isolated")
        else None,
        "s": servers,
    }
    return data, tuple((row[0], row[2], row[3]) for row in servers)


def _typo(view: Mapping[str, Any], watcher: Mapping[str, Any]) -> str | None:
    """Served otherwise than its config says: /health's ``degraded`` lines of it (a held
    swap or restart, a previous list kept), else a config typo that still loads: a SIGHUP's
    discovery with no server (the previous one followed: synapse.watcher_swap), or
    label_filters that drop every record."""
    said = view.get("degraded")
    if said:
        return "; ".join(said)
    empty = (watcher.get("replacing") or {}).get("empty")
    if empty:
        return f"new discovery: {empty}; the previous one is followed"
    unmatched = view.get("label_filters_match_nothing")
    if unmatched:
        return (f"{unmatched['records']} records, every one dropped by label_filters "
                f"{unmatched['filters']}")  # fmt: skip
    return None


def page_data(
    status: Mapping[str, Any],
    traffic: Mapping[tuple[str, str], Traffic],
    zones: Mapping[tuple[str, str], str],
    tracker: ChangeTracker,
    now: float,
) -> dict[str, Any]:
    """The whole page's data from /status, the traffic sample and the servers' zones."""
    services = []
    for name, view in sorted((status.get("services") or {}).items()):
        data, signature = service_data(name, view, traffic, zones)
        lastchg = [row[9] for row in data["s"] if row[9] is not None]
        seen = tracker.changed_at(name, signature, now)
        registry = (view.get("watcher") or {}).get("last_change")  # the registry's last change
        candidates = [t for t in (seen, registry, now - min(lastchg) if lastchg else None) if t]
        data["ch"] = round(max(candidates), 1) if candidates else None
        services.append(data)
    tracker.keep_only(s["n"] for s in services)
    haproxy = status.get("haproxy")
    reconciler = status.get("reconciler") or {}
    return {
        "host": status.get("host"),
        "now": round(now, 1),
        "started_at": status.get("started_at"),
        "apply": reconciler.get("last_apply"),
        "error": reconciler.get("last_error"),
        "haproxy": {key: haproxy.get(key) for key in HAPROXY_KEYS} if haproxy else None,
        "zookeeper": status.get("zookeeper") or [],
        "etcd": status.get("etcd") or [],
        "services": services,
    }


class StatusPage:
    """The two handlers; ``status`` is the daemon's /status, ``zones`` its server rows."""

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        zones: Callable[[], ZoneRows],
        sampler: TrafficSampler | None,
        stats_url: str | None = None,
    ) -> None:
        self._status = status
        self._zones = zones
        self.sampler = sampler
        self.stats_url = stats_url
        self._tracker = ChangeTracker()
        self._html = load_page()

    async def html(self, _: web.Request) -> web.Response:
        return web.Response(
            text=self._html, content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    async def data(self, _: web.Request) -> web.Response:
        traffic = await self.sampler.traffic() if self.sampler else {}
        zones = {(row[0], row[2]): row[4] for row in self._zones()}
        data = page_data(self._status(), traffic, zones, self._tracker, time.time())
        data["stats_url"] = self.stats_url
        data["traffic_error"] = self.sampler.error if self.sampler else None
        body = json.dumps(data, separators=(",", ":"), default=str)
        return web.Response(
            text=body, content_type="application/json", headers={"Cache-Control": "no-store"}
        )
