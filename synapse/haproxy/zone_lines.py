"""The frontend lines of zone signals (docs/zone-routing.md): a request that names its
zone, by the ``sticky`` cookie, the ``header`` or the address it arrived on
(``zone_of_address``), is served by ``<backend>_zone_<zone>`` while that backend has a
usable server. Pure.

Priority: cookie, then header, then address. The ``use_backend`` lines are tried in that
order and each needs its zone backend to have a usable server (``nbsrv`` counts servers
that are up with a weight above 0: a dead zone, or one closed to named traffic by an
evacuation, has none); a request none of them takes goes to the service's backend, the
zone decision's split. With ``sticky``, a response whose server is in another zone than
the request's cookie said (or that had none) sets the cookie to that zone, read from the
map ``<backend>/<server> -> zone`` (synapse.haproxy.zone_map, kept at runtime).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from synapse.model import DesiredService
from synapse.zone_config import zone_backend_name

COOKIE_VAR = "txn.synapse_zone_cookie"
SERVER_VAR = "txn.synapse_zone_server"
SERVED_VAR = "txn.synapse_zone_served"
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})  # binds every address already
_LOCALHOST = {"localhost": "127.0.0.1"}  # synapse's default bind address


def frontend_lines(
    service: DesiredService,
    map_path: Path | None,
    main_address: str,
    bind: Callable[[str], str],
) -> list[str]:
    """The lines a service's frontend gets for its zone signals ([] without any).

    ``main_address``: the address of its own bind line; ``bind(address)`` the bind
    line (address, port and options) for another address.
    """
    routing = service.config.zone_routing
    if routing is None or not routing.signals or not service.zones:
        return []
    backend = service.backend_name
    lines = [
        f"bind {bind(address)}"
        for address in sorted(routing.zone_of_address)
        if main_address not in _WILDCARDS and address != _LOCALHOST.get(main_address, main_address)
    ]
    picks: list[tuple[str, str]] = []  # (zone, condition), in priority order
    if routing.sticky:
        picks += [(z, f"{{ req.cook({routing.sticky}) -m str {z} }}") for z in service.zones]
    if routing.header:
        picks += [(z, f"{{ req.hdr({routing.header}) -m str {z} }}") for z in service.zones]
    for zone in service.zones:
        addresses = sorted(a for a, z in routing.zone_of_address.items() if z == zone)
        if addresses:
            picks.append((zone, f"{{ dst {' '.join(addresses)} }}"))
    if routing.sticky and map_path is not None:
        served = f"var({SERVED_VAR})"
        lines += [
            f"http-request set-var({COOKIE_VAR}) req.cook({routing.sticky})",
            f"http-response set-var({SERVER_VAR}) srv_name",
            f"http-response set-var({SERVED_VAR}) str({backend}/),concat(,{SERVER_VAR}),"
            f"map({map_path})",
            f'http-response add-header Set-Cookie "{routing.sticky}=%[{served}]; Path=/" '
            f"if {{ {served} -m found }} !{{ {served},strcmp({COOKIE_VAR}) eq 0 }}",
        ]
    for zone, condition in picks:
        target = zone_backend_name(backend, zone)
        lines.append(f"use_backend {target} if {condition} {{ nbsrv({target}) gt 0 }}")
    return lines
