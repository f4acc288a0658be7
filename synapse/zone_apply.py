"""Smart routing applied: the zone decision turned into the servers' HAProxy weights.

The reconciler passes every DesiredService it builds through ``ZoneRouter.routed``:
a service with ``zone_routing`` gets each server's weight from its ZoneDecision
(synapse.zones), always explicit (0 = no traffic, 1-256), so the HAProxy planner turns
any change into runtime ``set weight`` operations: no reload for a transition among
known zones. The server's nominal weight (nerve's, or None) stays in the selection;
the decision reads it from there. A service with zone signals (sticky, header,
zone_of_address) is followed by its per-zone backends (synapse.zone_backends).
``evacuation_applier`` is what the admin API's
``POST /zones/<zone>/evacuate|restore`` calls (synapse.zone_api).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from smartstack.logs import event
from synapse.model import DesiredService, Server
from synapse.resilience_config import ZONE_OBSERVE
from synapse.zone_backends import ZoneBackends, reserved_names
from synapse.zone_state import Evacuations
from synapse.zones import ZoneDecision, decide_service, zone_of

if TYPE_CHECKING:  # (zone_api would pull the admin server into the reconciler)
    from synapse.config import ServiceConfig, SynapseConfig
    from synapse.contract import Applier, ApplyResult
    from synapse.metrics import SynapseMetrics
    from synapse.reconciler import Reconciler
    from synapse.state_cache import StateCache
    from synapse.zone_api import ApplyEvacuations
    from synapse.zone_config import ZoneRouting

log = logging.getLogger("synapse.zone_apply")

REASON = "zone evacuations changed"
SEEN_CAP = 64  # record zones remembered per service (zone API checks): records are not ours


class ZoneRouter:
    """The local zone, the runtime evacuations and each zone-routed service's last decision."""

    def __init__(
        self,
        local_zone: str | None,
        evacuations: Evacuations | None = None,
        metrics: SynapseMetrics | None = None,
    ) -> None:
        self.local_zone = local_zone
        self.evacuations = evacuations or Evacuations()
        self.decisions: dict[str, ZoneDecision] = {}
        # service -> its servers HAProxy has DOWN (synapse.zone_health, while it looks)
        self.down: dict[str, frozenset[str]] = {}
        self.seen: dict[str, set[str]] = {}  # service -> zones its records had since start
        refused = metrics.zone_backends_refused if metrics is not None else None
        # per-zone backends (sticky, header, zone_of_address)
        self.backends = ZoneBackends(
            None if refused is None else lambda s, reason: refused.labels(s, reason).inc()
        )
        # service -> (the reconciler's object, what the decision used, the routed objects):
        # an unchanged service is handed over as the very same objects (the applier skips it)
        self._made: dict[str, tuple[DesiredService, Any, list[DesiredService]]] = {}
        self._with_observe: dict[str, tuple[ServiceConfig, ServiceConfig]] = {}  # _observed

    def configure(self, config: SynapseConfig) -> None:
        """The config (at start and on SIGHUP): the local zone, the names taken, the
        services routed."""
        self.local_zone = config.zone
        managed = config.haproxy is not None and config.haproxy.managed is not None
        if managed != self.backends.managed:
            self.backends.managed = managed
            self._made.clear()  # (their zone backends change: with backups or without)
        for name in self.backends.reserve(reserved_names(config)):
            self._made.pop(name, None)  # a record zone lost its backend to a new service
        # A service removed (or no longer routed) by SIGHUP is never routed again: drop
        # its state, or /zones answers and memory would keep it forever.
        kept = {
            name
            for name, service in config.services.items()
            if service.zone_routing is not None and not service.haproxy.disabled
        }
        for name in {*self.decisions, *self._made, *self.backends.services()} - kept:
            self.decisions.pop(name, None)
            self.down.pop(name, None)
            self.seen.pop(name, None)
            self._made.pop(name, None)
            self._with_observe.pop(name, None)
            self.backends.forget(name)

    def weighted(self, service: DesiredService) -> DesiredService:
        """``service`` with the zone decision's weights; itself when it is not zone-routed."""
        return self.routed(service)[0]

    def routed(self, service: DesiredService) -> list[DesiredService]:
        """``service`` with the zone decision's weights, then its zone backends (if it
        uses zone signals); ``[service]`` when it is not zone-routed."""
        if service.config.zone_routing is None:
            self.decisions.pop(service.name, None)
            self.down.pop(service.name, None)
            self.backends.forget(service.name)
            return [service]
        down = self.down.get(service.name, frozenset())
        inputs = (self.local_zone, self.evacuations.for_service(service.name), down)
        made = self._made.get(service.name)
        if made is not None and made[0] is service and made[1] == inputs:
            return made[2]
        decision = decide_service(service, *inputs)
        assert decision is not None  # zone-routed
        if down and decision.mode == "no_healthy_servers":
            # HAProxy has every usable server DOWN: keep the registry's weights, so the
            # first one its checks bring back serves at once (not after the next look).
            inputs = (*inputs[:2], frozenset())
            decision = decide_service(service, *inputs)
            assert decision is not None
        self.decisions[service.name] = decision
        seen = self.seen.setdefault(service.name, set())
        if len(seen) < SEEN_CAP:
            seen.update(z.zone for z in decision.zones if z.servers)
        servers = placed(service, decision, *inputs)
        weighted = DesiredService(service.name, self._observed(service, servers), servers)
        result = self.backends.expand(service, weighted, decision, without(service, *inputs))
        self._made[service.name] = (service, (*inputs[:2], down), result)
        return result

    def handed_over(self, services: Iterable[str]) -> set[str]:
        """The names HAProxy's side knows ``services`` by: each, and its zone backends."""
        names: set[str] = set()
        for name in services:
            made = self._made.get(name)
            names.update([name] if made is None else (routed.name for routed in made[2]))
        return names

    def known_zones(self, service: str, routing: ZoneRouting) -> set[str]:
        """The zones ``service`` knows: named by its config, or in its records since the
        start (what the zone API lets an operator evacuate)."""
        named = {*routing.zones, *routing.evacuate, *routing.zone_of_address.values()}
        return named | self.seen.get(service, set())

    def watched(self, local: bool = True) -> dict[str, str]:
        """service -> backend whose DOWN servers the decision should know (zone_health):
        those not served by their local zone alone, those with a server DOWN at the last
        look (to see it come back) and, with ``local``, those served by their local zone.
        HAProxy fails over from a dead local zone to the backups by itself, but the
        decision (and /status) would say "local" until the records go (session, lease
        TTL; forever for a hung zone): zone_health reads these too, less often."""
        return {
            name: self._made[name][0].backend_name
            for name, decision in self.decisions.items()
            if name in self._made and (local or decision.mode != "local" or self.down.get(name))
        }

    def stranded(self) -> bool:
        """Whether a service is served by the other zones alone (HAProxy's backups) while
        its local zone has usable servers at weight 0 (evacuated, below min_local): should
        the backups die, HAProxy has no server with a weight, and only synapse gives the
        local zone its weights back (zone_health looks more often meanwhile)."""
        return any(
            decision.mode == "spill"
            and any(z.zone == decision.local_zone and z.usable for z in decision.zones)
            for decision in self.decisions.values()
        )

    def _observed(self, service: DesiredService, servers: list[Server]) -> ServiceConfig:
        """The service's config, with ``observe`` (ZONE_OBSERVE) where HAProxy can fail
        over: managed mode, checks not turned off, no ``observe`` of its own, and another
        zone to go to: named in ``zones``, or a backup that can take traffic now. Where
        none could, marking the last servers down at their first refused connection would
        turn a blip that retries ride out into 503s. Once on, it stays on for this config
        (it is a line of the backend: turning it off and on would cost reloads)."""
        hap = service.config.haproxy
        kept = self._with_observe.get(service.name)
        if kept is not None and kept[0] is service.config:
            return kept[1]
        routing = service.config.zone_routing
        named = routing is not None and any(z != self.local_zone for z in routing.zones)
        able = named or any(s.backup and s.weight for s in servers)
        if not (able and self.backends.fails_over(service) and hap.observe is None):
            return service.config
        observed = hap.model_copy(update={"observe": ZONE_OBSERVE})  # (made once per config)
        kept = (service.config, service.config.model_copy(update={"haproxy": observed}))
        self._with_observe[service.name] = kept
        return kept[1]

    def status(self, services: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        """service -> its ``zones`` object for /status (those in ``services``, None: all)."""
        return {
            name: self._status(name, decision)
            for name, decision in sorted(self.decisions.items())
            if services is None or name in services
        }

    def _status(self, name: str, decision: ZoneDecision) -> dict[str, Any]:
        found = {**decision.to_status(), **self.backends.status(name, decision)}
        if self.down.get(name):  # counted out, unless HAProxy has every usable server DOWN
            found["haproxy_down"] = sorted(self.down[name])
        return found


def without(
    service: DesiredService,
    local: str | None,
    evacuated: Collection[str],
    down: Collection[str] = (),
) -> Callable[[str], Mapping[str, int]]:
    """zone -> every server's weight were that zone's servers down, besides ``down``
    (HAProxy's DOWN ones): a zone backend's backups, where a request naming a dead zone
    goes (synapse.zone_backends)."""
    routing = service.config.zone_routing
    assert routing is not None
    zones = {s.name: zone_of(s.labels, routing.label) for s in service.servers}

    def weights(zone: str) -> Mapping[str, int]:
        gone = {name for name, its in zones.items() if its == zone}.union(down)
        decision = decide_service(service, local, evacuated, gone)
        assert decision is not None  # zone-routed
        return decision.weight_of

    return weights


def placed(
    service: DesiredService,
    decision: ZoneDecision,
    local: str | None,
    evacuated: Collection[str],
    down: Collection[str] = (),
) -> list[Server]:
    """The servers with their HAProxy weights. With a local zone, the other zones' servers
    are HAProxy backups (``option allbackups``), weighted as the decision would weigh them
    if every local server were down: when HAProxy finds the local zone dead (its checks,
    ``observe``) it fails over by itself, at once, before the registry or synapse knows
    (docs/zone-routing.md, "A lost zone"). While the decision routes to other zones, the
    local servers have weight 0 and the backups serve with the same weights."""
    weights = decision.weight_of
    routing = service.config.zone_routing
    if local is None or routing is None:
        return [dataclasses.replace(s, weight=weights[s.name]) for s in service.servers]
    lost = without(service, local, evacuated, down)(local)
    return [
        dataclasses.replace(s, weight=weights[s.name])
        if zone_of(s.labels, routing.label) == local
        else dataclasses.replace(s, weight=lost[s.name], backup=True)
        for s in service.servers
    ]


def evacuation_applier(
    reconciler: Reconciler,
    applier: Applier | None,
    state_cache: Callable[[], StateCache | None],
) -> ApplyEvacuations:
    """The ``apply`` of synapse.zone_api.ZoneAPI: new evacuations reach HAProxy now.

    The weights go through the applier at once (runtime ``set weight``, no reload), so the
    answer tells whether HAProxy took them; a refusal restores the old evacuations and
    raises (the API answers 503, nothing changed). Another service's isolation is no refusal
    (``refusal``): only that of a service whose weights the change moves. Then they are kept
    in the state file. One that cannot be written (a full or read-only disk, in the very
    incident the operator evacuates for) does not block the change: it runs, the answer says
    ``persisted`` false, and the reconciler's next state-file writes (retried while they
    fail) keep it. The reconciler is told to hand everything over again: a round of its own
    that computed its desired state before the change cannot leave the old weights.
    Returns (every zone-routed service's zone state, whether the state file kept it).
    """

    async def apply(new: Evacuations) -> tuple[Mapping[str, Any], bool]:
        router = reconciler.zones
        old = router.evacuations
        router.evacuations = new
        reconciler.wake(REASON)
        # Before the reconciler's first hand-over the desired state is not complete yet:
        # its first round takes the new evacuations with it.
        if applier is not None and reconciler.applies > 0:
            try:
                result = await applier.apply(reconciler.desired(), REASON)
            except BaseException:
                _undo(reconciler, old)
                raise
            changed = [n for n in router.decisions if old.for_service(n) != new.for_service(n)]
            moved = router.handed_over(changed)
            if (why := refusal(result, moved)) is not None:
                _undo(reconciler, old)
                raise RuntimeError(why)
        cache = state_cache()
        persisted = cache is not None and await asyncio.to_thread(cache.save_evacuations, new)
        if cache is not None and not persisted:
            reconciler.retry_state_file()  # (each second until the disk takes it)
            event(log, "zone_change_not_persisted", level=logging.WARNING, path=str(cache.path),
                  reason=(cache.last_error or "")[:200])  # fmt: skip
        return router.status(), persisted

    return apply


def refusal(result: ApplyResult, moved: Collection[str]) -> str | None:
    """Why HAProxy did not take an evacuation's weights (None: it did). ``moved``: the
    services whose weights it changes. An apply refused only because other services stay
    isolated (``isolation.outcome``) ran its runtime commands: the weights are in."""
    if result.reload.applied:
        return None
    stuck = sorted(set(result.isolated) & set(moved))
    if stuck:
        names = ", ".join(stuck)
        return f"HAProxy did not take the new weights: {names} isolated (haproxy -c refuses it)"
    if result.isolated:
        return None
    return f"HAProxy did not take the new weights ({result.reload.value})"


def _undo(reconciler: Reconciler, old: Evacuations) -> None:
    reconciler.zones.evacuations = old
    reconciler.wake(REASON)
