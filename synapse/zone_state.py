"""Runtime zone evacuations (``synapse zone evacuate az2 [--service S]``). Pure, immutable.

An evacuation is either global (every zone-routed service) or for one service. The
set a service's decision uses is the union of both (and of its config ``evacuate``,
added by synapse.zones.decide). The JSON form is what synapse keeps in its state file:

    {"global": ["az2"], "services": {"web": ["az3"]}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from synapse.zone_config import check_zone_name


class RestoreConflict(ValueError):
    """A per-service restore of a zone that is evacuated globally: restore it globally."""


@dataclass(frozen=True)
class Evacuations:
    everywhere: frozenset[str] = frozenset()
    # (service, zones) pairs sorted by service; services without evacuations are absent
    per_service: tuple[tuple[str, frozenset[str]], ...] = field(default=())

    def for_service(self, service: str) -> frozenset[str]:
        """The zones ``service`` must keep traffic away from (runtime evacuations only)."""
        return self.everywhere | dict(self.per_service).get(service, frozenset())

    def evacuate(self, zone: str, service: str | None = None) -> Evacuations:
        check_zone_name(zone)
        if service is None:
            return Evacuations(self.everywhere | {zone}, self.per_service)
        return self._with(service, dict(self.per_service).get(service, frozenset()) | {zone})

    def restore(self, zone: str, service: str | None = None) -> Evacuations:
        """Global restore clears the zone everywhere, per-service evacuations included."""
        check_zone_name(zone)
        if service is None:
            kept = tuple((s, zones - {zone}) for s, zones in self.per_service)
            return Evacuations(self.everywhere - {zone}, tuple((s, z) for s, z in kept if z))
        if zone in self.everywhere:
            raise RestoreConflict(
                f"zone {zone} is evacuated for every service; restore it without a service"
            )
        return self._with(service, dict(self.per_service).get(service, frozenset()) - {zone})

    def _with(self, service: str, zones: frozenset[str]) -> Evacuations:
        rest = {s: z for s, z in self.per_service if s != service}
        if zones:
            rest[service] = zones
        return Evacuations(self.everywhere, tuple(sorted(rest.items())))

    def to_json(self) -> dict[str, Any]:
        return {
            "global": sorted(self.everywhere),
            "services": {s: sorted(zones) for s, zones in self.per_service},
        }

    @classmethod
    def from_json(cls, data: Any) -> Evacuations:
        """Parse the JSON form; ValueError naming the bad part (a state file can be edited)."""
        if not isinstance(data, Mapping):
            raise ValueError("zone evacuations: expected an object")
        everywhere = _zones(data.get("global", []), "global")
        services = data.get("services", {})
        if not isinstance(services, Mapping):
            raise ValueError("zone evacuations: 'services' must be an object")
        per_service = {str(s): _zones(z, f"services.{s}") for s, z in services.items()}
        return cls(everywhere, tuple(sorted((s, z) for s, z in per_service.items() if z)))


def _zones(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise ValueError(f"zone evacuations: {where} must be a list of zones")
    return frozenset(check_zone_name(zone, f"{where}:") for zone in value)
