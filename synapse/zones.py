"""The zone decision of smart routing: which servers get traffic, and how much. Pure.

Input: one service's servers (zone, nominal weight, healthy), its ``zone_routing``
config, the local zone and the evacuated zones. Output: a ``ZoneDecision`` with the
HAProxy weight of every server (0 = no traffic, 1-256 otherwise), each zone's share
and why each zone is or is not serving (for /status). The HAProxy layer applies the
weights through the runtime API; nothing here does I/O.

Rules (docs/zone-routing.md):
- the local zone serves everything while it is not evacuated and has at least
  ``min_local`` usable servers (and at least one);
- otherwise traffic spills over the other zones that are not evacuated and have a
  usable server: ``even`` gives each such zone the same share whatever its server
  count, ``weighted`` splits by the servers' nominal weights;
- if no other zone can serve, a local zone below ``min_local`` still serves;
- if every zone with a usable server is evacuated, traffic still goes somewhere
  ("deliver whenever possible"): the decision is made as if nothing were
  evacuated, and flagged;
- no local zone (or one without servers of this service): spill over all zones.
A server is usable when it is healthy and its nominal weight is not 0 (an operator's
weight 0 means "no traffic" already). Within a zone, servers get traffic in
proportion to their nominal weights (equal when they have none).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from synapse.model import DesiredService, Server
from synapse.zone_config import UNKNOWN_ZONE, ZoneRouting, check_zone_name

if TYPE_CHECKING:  # imported where it is used: fractions and decimal cost every sidecar ~0.4 MB
    from fractions import Fraction

MAX_WEIGHT = 256  # HAProxy's largest server weight; the scale every decision is mapped onto

__all__ = [
    "MAX_WEIGHT",
    "UNKNOWN_ZONE",
    "Mode",
    "ZoneDecision",
    "ZoneServer",
    "ZoneStatus",
    "check_zone_name",
    "decide",
    "decide_service",
    "zone_of",
    "zone_servers",
]

# Why traffic goes where it goes:
#   local               the local zone serves everything
#   local_below_min     the local zone has fewer than min_local servers, but no other can serve
#   spill               the local zone cannot serve (lost, evacuated or none): other zones serve
#   evacuated_fallback  every zone that could serve is evacuated: served anyway, as if not
#   no_healthy_servers  nothing can serve
Mode = Literal["local", "local_below_min", "spill", "evacuated_fallback", "no_healthy_servers"]


@dataclass(frozen=True)
class ZoneServer:
    """What the decision needs of one server."""

    name: str
    zone: str
    weight: int | None = None  # nominal weight (nerve weights); None = like every other
    healthy: bool = True  # present in the registry; False when HAProxy reports it DOWN

    @property
    def usable(self) -> bool:
        return self.healthy and self.weight != 0


@dataclass(frozen=True)
class ZoneStatus:
    """One zone in the decision, for /status."""

    zone: str
    servers: int
    usable: int
    evacuated: bool
    active: bool  # gets traffic
    share: float  # realised share of this service's traffic, from the integer weights
    target: float  # share the rules ask for; ``share`` is within rounding of it
    why: str


@dataclass(frozen=True)
class ZoneDecision:
    mode: Mode
    local_zone: str | None
    evacuated: frozenset[str]  # config `evacuate` and runtime evacuations together
    weights: tuple[tuple[str, int], ...]  # (server name, 0-256), sorted by server name
    zones: tuple[ZoneStatus, ...]  # sorted by zone name

    @property
    def weight_of(self) -> dict[str, int]:
        return dict(self.weights)

    @property
    def shares(self) -> dict[str, float]:
        """Realised share per zone: sums to 1 whenever a server is usable."""
        return {z.zone: z.share for z in self.zones}

    @property
    def active_zones(self) -> tuple[str, ...]:
        return tuple(z.zone for z in self.zones if z.active)

    def to_status(self) -> dict[str, Any]:
        """The ``zones`` object of a service on /status."""
        return {
            "local_zone": self.local_zone,
            "mode": self.mode,
            "evacuated": sorted(self.evacuated),
            "active": list(self.active_zones),
            "share": {z.zone: round(z.share, 4) for z in self.zones},
            "zones": {
                z.zone: {
                    "servers": z.servers,
                    "usable": z.usable,
                    "evacuated": z.evacuated,
                    "active": z.active,
                    "share": round(z.share, 4),
                    "target": round(z.target, 4),
                    "why": z.why,
                }
                for z in self.zones
            },
        }


def zone_of(labels: Iterable[tuple[str, str]] | Mapping[str, str], label: str = "zone") -> str:
    """A server's zone from its record labels; ``unknown`` without (or with an unsafe) label."""
    value = dict(labels).get(label)
    try:
        return check_zone_name(value)
    except ValueError:
        # A record's label is not ours to trust: a zone name that could not reach a map
        # file or ACL safely is treated like a missing one.
        return UNKNOWN_ZONE


def zone_servers(
    servers: Iterable[Server], label: str = "zone", down: Collection[str] = ()
) -> list[ZoneServer]:
    """Servers of a DesiredService as the decision sees them; ``down``: names HAProxy has DOWN."""
    return [
        ZoneServer(s.name, zone_of(s.labels, label), s.weight, s.name not in down) for s in servers
    ]


def decide_service(
    service: DesiredService,
    local_zone: str | None,
    evacuated: Collection[str] = (),
    down: Collection[str] = (),
) -> ZoneDecision | None:
    """``decide`` for a DesiredService (its servers' labels and its ``zone_routing``)."""
    routing = service.config.zone_routing
    if routing is None:
        return None
    return decide(
        zone_servers(service.servers, routing.label, down), routing, local_zone, evacuated
    )


def decide(
    servers: Iterable[ZoneServer],
    routing: ZoneRouting | None,
    local_zone: str | None,
    evacuated: Collection[str] = (),
) -> ZoneDecision | None:
    """The zone decision for one service; None when it has no zone routing (weights untouched).

    ``evacuated`` are the runtime evacuations; the config's ``evacuate`` is added here.
    """
    if routing is None:
        return None
    pool = sorted(servers, key=lambda s: s.name)
    evac = frozenset(evacuated) | frozenset(routing.evacuate)
    by_zone: dict[str, list[ZoneServer]] = {z: [] for z in routing.zones}
    for server in pool:
        by_zone.setdefault(server.zone, []).append(server)
    usable = {z: [s for s in members if s.usable] for z, members in by_zone.items()}
    mode, active = _choose(usable, routing.min_local, local_zone, evac)
    targets = _targets(usable, active, routing.spill)
    weights = _weights(pool, usable, targets)
    total = sum(weights.values())
    statuses = []
    for zone in sorted({*by_zone, *evac}):
        members = by_zone.get(zone, [])
        zone_total = sum(weights[s.name] for s in members)
        statuses.append(
            ZoneStatus(
                zone=zone,
                servers=len(members),
                usable=len(usable.get(zone, [])),
                evacuated=zone in evac,
                active=zone in active,
                share=zone_total / total if total else 0.0,
                target=float(sum(targets.get(s.name, 0) for s in members)),
                why=_why(zone, mode, active, usable, local_zone, evac, routing.min_local),
            )
        )
    return ZoneDecision(
        mode=mode,
        local_zone=local_zone,
        evacuated=evac,
        weights=tuple(sorted(weights.items())),
        zones=tuple(statuses),
    )


def _choose(
    usable: Mapping[str, list[ZoneServer]],
    min_local: int,
    local: str | None,
    evac: frozenset[str],
) -> tuple[Mode, frozenset[str]]:
    """Which zones serve, and why."""
    serving = {z for z, members in usable.items() if members}
    if not serving:
        return "no_healthy_servers", frozenset()
    open_zones = serving - evac
    if not open_zones:
        # Deliver whenever possible: decide as if nothing were evacuated.
        _, active = _choose(usable, min_local, local, frozenset())
        return "evacuated_fallback", active
    if local in open_zones and len(usable[local]) >= min_local:
        return "local", frozenset({local})
    others = open_zones - {local}
    if others:
        return "spill", frozenset(others)
    return "local_below_min", frozenset(open_zones)  # only the (thin) local zone is left


def _targets(
    usable: Mapping[str, list[ZoneServer]], active: frozenset[str], spill: str
) -> dict[str, Fraction]:
    """Exact share of the service's traffic per usable server of an active zone."""
    from fractions import Fraction

    members = [s for z in sorted(active) for s in usable[z]]
    if not members:
        return {}
    if spill == "weighted" or len(active) == 1:
        total = sum(_nominal(s) for s in members)
        return {s.name: Fraction(_nominal(s), total) for s in members}
    # even: every active zone gets 1/len(active), split inside by nominal weights
    targets: dict[str, Fraction] = {}
    for zone in sorted(active):
        zone_total = sum(_nominal(s) for s in usable[zone])
        for s in usable[zone]:
            targets[s.name] = Fraction(_nominal(s), zone_total * len(active))
    return targets


def _nominal(server: ZoneServer) -> int:
    return 1 if server.weight is None else server.weight


def _weights(
    pool: list[ZoneServer],
    usable: Mapping[str, list[ZoneServer]],
    targets: Mapping[str, Fraction],
) -> dict[str, int]:
    """Integer weights 1-256 in proportion to the targets; the largest target gets 256.

    Each zone's total is apportioned by largest remainder, so a zone's total weight is
    within one step of its exact value unless the floor of 1 per server lifts it (a zone
    with more servers than its share of 256 steps): then within one step per server.
    """
    weights = {s.name: 0 for s in pool}
    if not targets:
        return weights
    scale = MAX_WEIGHT / max(targets.values())
    for members in usable.values():
        exact = {s.name: targets[s.name] * scale for s in members if s.name in targets}
        if not exact:
            continue
        want = round(sum(exact.values()))
        floors = {name: int(value) for name, value in exact.items()}
        spare = want - sum(floors.values())
        # Largest remainders first; ties by name, so the result is deterministic.
        order = sorted(exact, key=lambda n: (-(exact[n] - floors[n]), n))
        for name in order[: max(spare, 0)]:
            floors[name] += 1
        for name, value in floors.items():
            weights[name] = min(MAX_WEIGHT, max(1, value))
    return weights


def _why(
    zone: str,
    mode: Mode,
    active: frozenset[str],
    usable: Mapping[str, list[ZoneServer]],
    local: str | None,
    evac: frozenset[str],
    min_local: int,
) -> str:
    count = len(usable.get(zone, []))
    if zone in active:
        if mode == "evacuated_fallback":
            return "evacuated, but serving: no zone that is not evacuated has a healthy server"
        if mode == "local":
            return "local zone"
        if mode == "local_below_min":
            return f"local zone below min_local ({count} < {min_local}); no other zone can serve"
        return "spill: the local zone cannot serve" if local else "spill: no local zone"
    if count == 0:
        return "no healthy servers"
    if zone in evac:
        return "evacuated"
    if zone == local:
        return f"local zone below min_local ({count} < {min_local})"
    return "standby: the local zone serves"
