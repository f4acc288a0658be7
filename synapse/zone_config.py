"""ours: the zone contract of synapse's config (docs/zone-routing.md): zone names and a
service's ``zone_routing`` block."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from smartstack.modelbase import ConfigModel, Field, field_validator, model_validator

# Zone names can reach HAProxy map files, ACLs and cookies: a safe charset, bounded length.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Cookie and header names end up in haproxy.cfg: HTTP token characters without the exotic ones.
_HTTP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
UNKNOWN_ZONE = "unknown"  # the zone of a server whose record lacks the zone label
# The keys by which a request names its zone, in priority order (docs/zone-routing.md).
SIGNAL_KEYS = ("sticky", "header", "zone_of_address")
HTTP_ONLY_SIGNALS = ("sticky", "header")
ZONE_BACKEND_INFIX = "_zone_"  # <backend>_zone_<zone>: the backend of one zone's servers


def zone_backend_name(backend: str, zone: str) -> str:
    """The backend holding only ``zone``'s servers of ``backend`` (sticky, header, address)."""
    return f"{backend}{ZONE_BACKEND_INFIX}{zone}"


def check_zone_name(value: object, what: str = "") -> str:
    """The zone name, or ValueError saying what a zone name may be (``what``: where it was)."""
    if not isinstance(value, str) or not _ZONE_NAME.fullmatch(value):
        where = f"{what} " if what else ""
        raise ValueError(f"{where}{value!r} is not a zone name (1-64 of A-Z a-z 0-9 _ . -)")
    return value


class ZoneRouting(ConfigModel):
    """ours: zone-aware routing of one service (docs/zone-routing.md)."""

    label: str = Field(default="zone", min_length=1, max_length=128)
    min_local: int = Field(default=1, ge=0)
    spill: Literal["even", "weighted"] = "even"
    sticky: str | None = None  # cookie name; its value is a zone name
    header: str | None = None  # request header naming the zone a request was meant for
    zone_of_address: dict[str, str] = Field(default_factory=dict)  # bind address -> zone
    evacuate: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=list)  # expected zones, fixed up front

    @field_validator("sticky", "header")
    @classmethod
    def _http_name(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a usable name (1-64 of A-Z a-z 0-9 _ -)")
        return value

    @field_validator("evacuate", "zones")
    @classmethod
    def _zone_list(cls, value: list[str]) -> list[str]:
        for index, zone in enumerate(value):
            check_zone_name(zone, f"[{index}]")
        if len(set(value)) != len(value):
            raise ValueError(f"lists a zone twice: {value}")
        return value

    @field_validator("zone_of_address")
    @classmethod
    def _addresses(cls, value: dict[str, str]) -> dict[str, str]:
        for address, zone in value.items():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"key {address!r} is not an IP address") from None
            check_zone_name(zone, f"zone of {address}")
        return value

    @property
    def signals(self) -> tuple[str, ...]:
        """The keys in use that name a request's zone (cookie > header > address)."""
        return tuple(k for k in SIGNAL_KEYS if getattr(self, k))

    @model_validator(mode="after")
    def _within_expected_zones(self) -> ZoneRouting:
        # With a fixed layout, a zone named elsewhere but missing from `zones` is a typo.
        if self.zones:
            named = {*self.evacuate, *self.zone_of_address.values()}
            missing = sorted(named - set(self.zones))
            if missing:
                raise ValueError(f"zones {missing} are used but not listed in 'zones'")
        return self


# `set weight` works at runtime only with HAProxy's dynamic algorithms (hash-based ones
# need `hash-type consistent`): zone weights must never need a reload.
_DYNAMIC_BALANCE = frozenset({"roundrobin", "leastconn", "first", "random"})


def check_dynamic_balance(lines: list[str]) -> None:
    """ValueError when a zone-routed backend's own lines choose a static algorithm."""
    balance = hash_type = None
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[0] == "balance":
            balance = words[1].split("(")[0].lower()
        elif len(words) > 1 and words[0] == "hash-type":
            hash_type = words[1].lower()
    if balance is None or balance in _DYNAMIC_BALANCE or hash_type == "consistent":
        return
    raise ValueError(
        f"zone_routing needs a dynamic balance algorithm (roundrobin, leastconn, first, "
        f"random, or hashing with hash-type consistent): 'balance {balance}' would need a "
        "reload for every zone weight change"
    )


def check_signals(
    service: str,
    routing: ZoneRouting,
    frontend: bool,
    mode: str,
    config_file_path: str | None,
) -> None:
    """ValueError (naming the key) when a service's zone signals cannot work.

    ``frontend``: the service has a frontend of its own with a port; ``mode``: that
    frontend's mode. Cookie and header need HTTP; the address works in TCP too (``dst``).
    """
    for key in routing.signals:
        where = f"services.{service}.zone_routing.{key}"
        if not frontend:
            raise ValueError(
                f"{where}: needs the service's own frontend (set haproxy.port): the zone "
                "backends are chosen there"
            )
        if key in HTTP_ONLY_SIGNALS and mode != "http":
            raise ValueError(
                f"{where}: needs an HTTP frontend, this one is in {mode} mode (add 'mode http' "
                "to haproxy.frontend or haproxy.defaults; in TCP mode only zone_of_address "
                "works)"
            )
        if key == "sticky" and not config_file_path:
            raise ValueError(
                f"{where}: needs haproxy.config_file_path (the map of server zones that sets "
                "the cookie lives beside it)"
            )


def check_zone_backend_names(backends: dict[str, str], routed: dict[str, ZoneRouting]) -> None:
    """ValueError when a zone backend known up front has another service's backend name
    or service name (both key the HAProxy side's per-service state).

    ``backends``: service -> backend name; ``routed``: the services with zone signals.
    """
    owners = {service: f"the name of service {service!r}" for service in backends}
    for service, backend in backends.items():
        owners[backend] = f"the backend of service {service!r}"
    for service, routing in sorted(routed.items()):
        for zone in sorted({*routing.zones, *routing.zone_of_address.values()}):
            name = zone_backend_name(backends[service], zone)
            if name in owners:
                raise ValueError(
                    f"services.{service}.zone_routing: the backend of zone {zone}, {name!r}, "
                    f"is {owners[name]}: rename one"
                )
            owners[name] = f"the backend of zone {zone} of service {service!r}"
