"""synapse's zone endpoints on the admin API (``synapse zone evacuate|restore`` calls them).

    GET  /zones                               the runtime evacuations
    POST /zones/{zone}/evacuate[?service=S][&force=1]   keep traffic away from the zone
    POST /zones/{zone}/restore[?service=S]    let it serve again

The answer is 200 with the new evacuations, each zone-routed service's zone state and
whether the state file kept them (``persisted``: what ``apply`` returns), 400 for a bad
zone name or an empty ``service``, 404 for an unknown service, 409 for a service without
``zone_routing``, a per-service restore of a global evacuation, or an evacuation of a zone
no targeted service knows (unless ``?force=1``), 503 when the new state could not be
applied (then nothing changed). With ``admin.token_file`` the POSTs need the bearer token
(smartstack.admin's middleware).

The daemon wires ``apply``: it hands the evacuations to the HAProxy side (weights through
the runtime API) and keeps them in the state file. Until then it is any callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from smartstack import httpserver as web
from smartstack.admin import Handler, json_response
from smartstack.logs import event
from synapse.zone_config import ZoneRouting, check_zone_name
from synapse.zone_state import Evacuations, RestoreConflict

log = logging.getLogger("synapse.zone_api")

# Applies a new set of evacuations; returns service -> its zone state (for the answer), and
# whether the state file kept them (False: applied in memory only, written later).
ApplyEvacuations = Callable[[Evacuations], Awaitable[tuple[Mapping[str, Any], bool]]]
# (service, its zone_routing) -> the zones it knows (ZoneRouter.known_zones)
KnownZones = Callable[[str, ZoneRouting], Collection[str]]


class _Routes(Protocol):
    def add_route(self, method: str, path: str, handler: Handler) -> None: ...


class ZoneAPI:
    def __init__(
        self,
        evacuations: Evacuations,
        services: Callable[[], Mapping[str, ZoneRouting | None]],
        apply: ApplyEvacuations,
        known: KnownZones | None = None,
    ) -> None:
        self.evacuations = evacuations
        self._services = services
        self._apply = apply
        self._known = known  # None: any zone name may be evacuated
        self._lock = asyncio.Lock()  # one change at a time: none is lost to a race

    def add_routes(self, admin: _Routes) -> None:
        admin.add_route("GET", "/zones", self.show)
        admin.add_route("POST", "/zones/{zone}/evacuate", self.evacuate)
        admin.add_route("POST", "/zones/{zone}/restore", self.restore)

    async def show(self, _: web.Request) -> web.Response:
        return json_response({"evacuations": self.evacuations.to_json()})

    async def evacuate(self, request: web.Request) -> web.Response:
        return await self._change(request, "evacuate")

    async def restore(self, request: web.Request) -> web.Response:
        return await self._change(request, "restore")

    async def _change(self, request: web.Request, action: str) -> web.Response:
        zone = request.match_info["zone"]
        try:
            check_zone_name(zone)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        service = request.query.get("service")  # (absent: every service)
        if service is not None:
            self._check_service(service)
        # (a restore of any zone is fine: it cleans up; `force`: the operator knows the zone
        # is real, e.g. synapse restarted while it has no records and no `zones` entry)
        if action == "evacuate" and request.query.get("force") not in ("1", "true", "yes"):
            self._check_zone(zone, service)
        async with self._lock:
            try:
                if action == "evacuate":
                    new = self.evacuations.evacuate(zone, service)
                else:
                    new = self.evacuations.restore(zone, service)
            except RestoreConflict as exc:
                raise web.HTTPConflict(text=f"{exc}\n") from None
            try:
                services, persisted = await self._apply(new)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                event(log, "zone_change_failed", level=logging.ERROR, zone=zone,
                      action=action, service=service or "*", error=error)  # fmt: skip
                raise web.HTTPServiceUnavailable(
                    text=f"not applied, nothing changed: {error}\n"
                ) from None
            changed = new != self.evacuations
            self.evacuations = new
        event(log, f"zone_{action}", zone=zone, service=service or "*", changed=changed,
              persisted=persisted)  # fmt: skip
        return json_response(
            {
                "zone": zone,
                "action": action,
                "service": service,
                "changed": changed,
                "persisted": persisted,
                "evacuations": new.to_json(),
                "services": dict(services),
            }
        )

    def _check_zone(self, zone: str, service: str | None) -> None:
        """409 for a zone none of the targeted services knows (a typo such as AZ1 would
        be kept in the state file forever, with no effect)."""
        if self._known is None:
            return
        routed = {n: r for n, r in self._services().items() if r is not None}
        targets = [service] if service is not None else sorted(routed)
        known = set().union(*(self._known(name, routed[name]) for name in targets))
        if zone not in known:
            names = ", ".join(sorted(known)) or "-"
            raise web.HTTPConflict(
                text=f"zone {zone!r} is unknown to {service or 'every service'} (known: "
                f"{names}); list it in zone_routing.zones to evacuate it before its first "
                "server registers, or force it (?force=1, `synapse zone evacuate --force`)\n"
            )

    def _check_service(self, service: str) -> None:
        if not service:  # `?service=` must not become "every service"
            raise web.HTTPBadRequest(text="empty service name (leave ?service= out for all)\n")
        known = self._services()
        if service not in known:
            names = ", ".join(sorted(known)) or "-"
            raise web.HTTPNotFound(text=f"unknown service {service!r}; known: {names}\n")
        if known[service] is None:
            raise web.HTTPConflict(text=f"service {service!r} has no zone_routing\n")
