"""Zone backends: where a request that names its zone is served. Pure.

A zone-routed service whose requests may name a zone (``sticky`` cookie, ``header``, or
the address it arrived on, ``zone_of_address``) gets, besides its backend (weighted by
the zone decision, synapse.zones), one backend per known zone holding only that zone's
servers: ``<backend>_zone_<zone>`` (docs/zone-routing.md). Its frontend picks one when the
request names that zone and the backend has a usable server (HAProxy's ``nbsrv``
counts only servers that are up with a weight above 0); otherwise the normal decision.

The zone backends are ordinary desired services without a frontend, so HAProxy's side
handles them like any backend: servers joining or leaving are runtime ``add server`` /
``state maint``, and a zone closed to named traffic (evacuated while another zone has a
usable server) gets weight 0 on every server: ``set weight``, no reload. Only a zone
never seen before (and not listed in ``zones``) adds a backend: one reload.

Records must not make synapse grow without bound: with ``zones`` listed only those
zones (and ``zone_of_address``'s) get backends; otherwise at most MAX_RECORD_ZONES zones
seen in a service's records do, and one without servers for FORGET_AFTER seconds is
dropped the next time the service's backends change anyway (a new zone, a new config),
never by itself (that would cost a reload). A zone refused a backend (also for a name
clash, see ``reserved_names``) has its servers served by the service's backend.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from smartstack.logs import event
from synapse.config import ServiceConfig, ServiceHAProxyConfig, SynapseConfig
from synapse.model import DesiredService, Server
from synapse.resilience_config import ZONE_OBSERVE
from synapse.zone_config import ZoneRouting, zone_backend_name
from synapse.zones import MAX_WEIGHT, ZoneDecision, ZoneServer, zone_of

log = logging.getLogger("synapse.zones")

MAX_RECORD_ZONES = 16  # zones from a service's records with a backend (none listed)
FORGET_AFTER = 600.0  # seconds without servers before a record zone may be dropped

# What a zone backend does not take over from its service: the frontend side.
_FRONTEND_KEYS = frozenset(
    {"port", "frontend", "shared_frontend", "routes", "bind_address", "bind_options"}
    | {"accept_proxy"}
)


def open_zones(decision: ZoneDecision) -> frozenset[str]:
    """Zones that serve requests naming them: a usable server, and not evacuated unless
    every zone with a usable server is (then traffic goes somewhere: deliver whenever
    possible, as the decision does)."""
    fallback = decision.mode == "evacuated_fallback"
    return frozenset(z.zone for z in decision.zones if z.usable and (fallback or not z.evacuated))


def in_zone_weights(servers: Iterable[ZoneServer], open_: bool) -> dict[str, int]:
    """Weights inside one zone backend: by nominal weight (the largest 256, at least 1)
    for usable servers of an open zone, 0 for the rest."""
    members = list(servers)
    usable = [s for s in members if s.usable] if open_ else []
    weights = {s.name: 0 for s in members}
    if usable:
        top = max(_nominal(s) for s in usable)
        for s in usable:
            weights[s.name] = max(1, min(MAX_WEIGHT, round(_nominal(s) * MAX_WEIGHT / top)))
    return weights


def _nominal(server: ZoneServer) -> int:
    return 1 if server.weight is None else server.weight


def known_zones(routing: ZoneRouting, seen: Iterable[str]) -> tuple[str, ...]:
    """Zones with a backend: listed in ``zones``, named by ``zone_of_address``, or seen."""
    return tuple(sorted({*routing.zones, *routing.zone_of_address.values(), *seen}))


def zone_service_config(
    config: ServiceConfig, backend: str, failover: bool = False, observe: bool = False
) -> ServiceConfig:
    """The config of a zone backend: the service's backend side, no frontend, no zones.
    ``failover``: it holds the other zones' servers as backups; ``observe``: some of them
    can take traffic, so HAProxy's checks and ``observe`` send it there from a dead zone
    at once, as in the service's own backend (synapse.zone_apply.observed)."""
    # Built from the validated fields as they are (no validation: a daemon on plain models
    # has no pydantic); every field kept counts as set, as a dump and validate made it.
    hap = config.haproxy
    data = {k: v for k, v in hap.__dict__.items() if k not in _FRONTEND_KEYS}
    data["backend_name"] = backend
    if failover:
        given = {" ".join(line.lower().split()) for line in (*hap.backend, *hap.listen)}
        if "option allbackups" not in given:
            data["backend"] = [*hap.backend, "option allbackups"]
        data["observe"] = hap.observe or (ZONE_OBSERVE if observe else None)
    haproxy = ServiceHAProxyConfig.model_construct(_fields_set=set(data), **data)
    return config.model_copy(update={"haproxy": haproxy, "zone_routing": None})


def configured_zones(routing: ZoneRouting) -> set[str]:
    """The zones the config names: they get a backend whatever the records say."""
    return {*routing.zones, *routing.zone_of_address.values()}


def reserved_names(config: SynapseConfig) -> frozenset[str]:
    """Names a zone backend seen in the records must not take: every service's name and
    backend name (they key the HAProxy side's per-service state) and the backends of the
    zones the config names (config loading already refuses clashes among those)."""
    names: set[str] = set()
    for name, service in config.services.items():
        backend = service.haproxy.backend_name or name
        names |= {name, backend}
        routing = service.zone_routing
        if routing is not None and routing.signals:
            names |= {zone_backend_name(backend, z) for z in configured_zones(routing)}
    return frozenset(names)


class ZoneBackends:
    """The zone backends of every service that uses zone signals; unchanged ones are
    handed over as the very same objects (the applier skips them by identity)."""

    def __init__(
        self,
        on_refused: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reserved: frozenset[str] = frozenset()  # see reserved_names
        self.managed = False  # synapse runs HAProxy (``fails_over``); set by the ZoneRouter
        self.clock = clock
        self._idle: dict[str, dict[str, float]] = {}  # service -> record zone -> empty since
        self._shape: dict[str, ServiceHAProxyConfig] = {}  # service -> its last haproxy block
        self._on_refused = on_refused  # (service, reason): the metric
        self._refused: dict[str, dict[str, str]] = {}  # service -> zone -> reason (logged)
        # record zones' backend names -> (their service, the zone)
        self._owners: dict[str, tuple[str, str]] = {}
        self._seen: dict[str, set[str]] = {}
        # (service, zone) -> (the service's config object, observe, the zone backend's config)
        self._configs: dict[tuple[str, str], tuple[ServiceConfig, bool, ServiceConfig]] = {}
        self._last: dict[str, dict[str, DesiredService]] = {}  # service -> zone -> backend
        self._routing: dict[str, ZoneRouting] = {}  # services with signals

    def expand(
        self,
        service: DesiredService,
        weighted: DesiredService,
        decision: ZoneDecision,
        without: Callable[[str], Mapping[str, int]],
    ) -> list[DesiredService]:
        """``weighted`` (the service with the decision's weights) naming its zone
        backends, then those backends. ``service``: the same with nominal weights;
        ``without(zone)``: every server's weight were that zone's servers down (the zone
        backend's backups, when it fails over)."""
        routing = service.config.zone_routing
        if routing is None or not routing.signals:
            self.forget(service.name)
            return [weighted]
        by_zone: dict[str, list[Server]] = {}
        for server in service.servers:
            by_zone.setdefault(zone_of(server.labels, routing.label), []).append(server)
        self._routing[service.name] = routing
        self._update_seen(service, routing, by_zone)
        seen = self._seen[service.name]
        zones = known_zones(routing, seen)
        opened = open_zones(decision)
        main = dataclasses.replace(weighted, zones=zones)
        out = [main]
        before, after = self._last.get(service.name, {}), {}
        for zone in zones:
            members = by_zone.get(zone, [])
            weights = in_zone_weights(
                (ZoneServer(s.name, zone, s.weight) for s in members), zone in opened
            )
            servers = [dataclasses.replace(s, weight=weights[s.name]) for s in members]
            backend = zone_backend_name(service.backend_name, zone)
            backups: list[Server] = []
            if self.fails_over(service):  # the other zones' servers are its backups
                kept, spill = {s.name for s in members}, without(zone)
                backups = [dataclasses.replace(s, weight=spill[s.name], backup=True)
                           for s in service.servers if s.name not in kept]  # fmt: skip
            observe = weighted.config.haproxy.observe is not None  # (as the service's own)
            config = self._config(service, zone, backend, observe)
            made = DesiredService(backend, config, servers + backups)
            last = before.get(zone)
            after[zone] = made = last if last is not None and last == made else made
            out.append(made)
        self._last[service.name] = after
        return out

    def _update_seen(
        self, service: DesiredService, routing: ZoneRouting, by_zone: dict[str, list[Server]]
    ) -> None:
        """The zones of ``service``'s records that have a backend: new ones admitted,
        idle ones dropped when the backends change anyway (module docstring)."""
        name, configured = service.name, configured_zones(routing)
        seen = self._seen.setdefault(name, set())
        if routing.zones:  # only the listed zones (the list changed: that reloads anyway)
            for zone in seen - configured:
                self._drop(name, zone, zone_backend_name(service.backend_name, zone))
            seen &= configured
        stale = self._stale(name, seen - configured, by_zone)
        kept = seen - stale
        admitted = []
        for zone in sorted(set(by_zone) - seen):
            if self._admit(service, routing, zone, kept):
                kept.add(zone)
                admitted.append(zone)
        shape = self._shape.get(name)
        self._shape[name] = service.config.haproxy
        if stale and (admitted or (shape is not None and shape != service.config.haproxy)):
            idle = self._idle[name]
            for zone in sorted(stale):
                event(log, "zone_backend_forgotten", service=name, zone=zone,
                      idle_s=round(self.clock() - idle.pop(zone)))  # fmt: skip
                self._drop(name, zone, zone_backend_name(service.backend_name, zone))
            seen -= stale
        seen.update(admitted)

    def _stale(self, service: str, recorded: set[str], by_zone: dict[str, Any]) -> set[str]:
        """The record zones of ``service`` without servers for FORGET_AFTER seconds."""
        now = self.clock()
        idle = self._idle.setdefault(service, {})
        for zone in [z for z in idle if z not in recorded or z in by_zone]:
            del idle[zone]
        for zone in recorded - set(by_zone):
            idle.setdefault(zone, now)
        return {zone for zone, since in idle.items() if now - since >= FORGET_AFTER}

    def _drop(self, service: str, zone: str, backend: str) -> None:
        self._configs.pop((service, zone), None)
        if self._owners.get(backend) == (service, zone):
            del self._owners[backend]

    def _admit(
        self, service: DesiredService, routing: ZoneRouting, zone: str, kept: set[str]
    ) -> bool:
        """May ``zone``, first seen in ``service``'s records, have a backend (``kept``:
        the zones that keep theirs)? A refused zone's servers are still served by the
        service's backend (the normal decision)."""
        configured = configured_zones(routing)
        if zone in configured:
            return True
        name = zone_backend_name(service.backend_name, zone)
        if routing.zones:
            return self._refuse(service.name, zone, name, "not_listed")
        if len(kept - configured) >= MAX_RECORD_ZONES:
            return self._refuse(service.name, zone, name, "cap")
        owner = self._owners.get(name, (service.name, zone))
        if name in self.reserved or owner != (service.name, zone):
            return self._refuse(service.name, zone, name, "name_clash")
        self._owners[name] = (service.name, zone)
        self._refused.get(service.name, {}).pop(zone, None)
        return True

    def _refuse(self, service: str, zone: str, backend: str, reason: str) -> bool:
        """Log (once per zone and reason) and count a zone refused a backend; False."""
        refused = self._refused.setdefault(service, {})
        if refused.get(zone) != reason:
            refused[zone] = reason
            event(log, "zone_backend_refused", level=logging.WARNING, service=service,
                  zone=zone, backend=backend, reason=reason)  # fmt: skip
            if self._on_refused is not None:
                self._on_refused(service, reason)
        return False

    def fails_over(self, service: DesiredService) -> bool:
        """Whether a zone backend of ``service`` holds the other zones' servers as backups
        (managed mode, HAProxy's checks not turned off: they find the dead zone)."""
        return self.managed and service.config.haproxy.health_check.enabled is not False

    def _config(
        self, service: DesiredService, zone: str, backend: str, observe: bool
    ) -> ServiceConfig:
        cached = self._configs.get((service.name, zone))
        if cached is not None and cached[0] is service.config and cached[1] == observe:
            return cached[2]
        failover = self.fails_over(service)
        config = zone_service_config(service.config, backend, failover, observe)
        self._configs[(service.name, zone)] = (service.config, observe, config)
        return config

    def status(self, service: str, decision: ZoneDecision) -> dict[str, Any]:
        """For /status: the signals of ``service`` and the zones that take named traffic
        ({} without signals)."""
        routing = self._routing.get(service)
        if routing is None:
            return {}
        signals = {key: getattr(routing, key) for key in routing.signals}
        with_backend = set(self._last.get(service, {}))  # (a refused zone takes none)
        return {"signals": signals, "named": sorted(open_zones(decision) & with_backend)}

    def reserve(self, names: frozenset[str]) -> set[str]:
        """Take the names no record zone may use (``reserved_names``; a new config):
        record zones holding one lose their backend. The services to route again."""
        self.reserved = names
        lost = set()
        for name, (service, zone) in sorted(self._owners.items()):
            if name in names:
                self._seen.get(service, set()).discard(zone)
                self._idle.get(service, {}).pop(zone, None)
                self._drop(service, zone, name)
                self._refuse(service, zone, name, "name_clash")
                lost.add(service)
        # a name set free (its service removed) may be taken now: route those again
        lost |= {s for s, zones in self._refused.items() if "name_clash" in zones.values()}
        return lost

    def services(self) -> set[str]:
        """The services this holds state for."""
        return {*self._seen, *self._last, *self._routing, *self._idle, *self._shape}

    def forget(self, service: str) -> None:
        """``service`` no longer uses zone signals (or is gone): its zones start afresh."""
        if service not in self._seen and service not in self._routing:
            # Nothing to scan: ``expand`` records the service in both before it keeps any
            # owner, config or zone state for it. (Called per apply for every service
            # without zone routing: 1,000 scans of the owners were ~10 % of a change.)
            for kept in (self._last, self._refused, self._idle, self._shape):
                kept.pop(service, None)
            return
        self._seen.pop(service, None)
        self._routing.pop(service, None)
        self._last.pop(service, None)
        self._refused.pop(service, None)
        self._idle.pop(service, None)
        self._shape.pop(service, None)
        for name in [n for n, owner in self._owners.items() if owner[0] == service]:
            del self._owners[name]
        for key in [k for k in self._configs if k[0] == service]:
            del self._configs[key]
