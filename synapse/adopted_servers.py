"""The servers a running HAProxy serves, for services with nothing else to start from.

A synapse that starts while its registry does not answer starts a service from the state
file (``synapse.state_cache``). A service the state file has nothing for (no file: an
older synapse wrote none, it was on tmpfs or deleted, an external HAProxy without
``state_file_path``; or only entries older than ``state_file_ttl``) was handed over with
no server: the backend HAProxy served from went empty (503s) until the registry came
back. Such a service keeps the servers HAProxy runs in its backend instead (origin
``haproxy`` on /status), until its registry answers; that answer wins, as ever.

What HAProxy runs is read as the seeding read-back does (``synapse.haproxy.seeding``):
the server lines of the config file (names and addresses as synapse wrote them), kept
only where HAProxy's runtime API lists that server in that backend, not in maintenance.
A backend HAProxy does not run, or a socket that does not answer (no HAProxy was
adopted), keeps nothing: no server is invented.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse.atomic import read_text
from synapse.config import SynapseConfig
from synapse.contract import Applier
from synapse.haproxy.configtext import ParsedConfig, ServerLine, parse_config
from synapse.model import Found, server_name
from synapse.selection import ORIGIN_HAPROXY, Selection, selection_found
from synapse.state_cache import StateCache
from synapse.zone_config import ZoneRouting, zone_backend_name

log = logging.getLogger("synapse.reconciler")

READ_WAIT = 5.0  # seconds the file and HAProxy's answer may take at a start (then: none kept)


class AdoptedServers:
    """Per service without a report or a state file entry: the servers HAProxy runs."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[Found, ...]] = {}

    async def read(
        self,
        applier: Applier | None,
        config: SynapseConfig,
        names: Collection[str],
        cache: StateCache | None,
    ) -> None:
        """Read what HAProxy runs for those of ``names`` the state file has no servers for."""
        haproxy = config.haproxy
        if applier is None or haproxy is None or not haproxy.config_file_path:
            return
        backends = {
            name: service.haproxy.backend_name or name
            for name in names
            if (service := config.services.get(name)) is not None
            and not service.haproxy.disabled
            and not (cache is not None and cache.cached(name))
        }
        if not backends:
            return
        try:  # (bounded: a start must not hang on a socket)
            async with asyncio.timeout(READ_WAIT):
                parsed = await asyncio.to_thread(_parsed, Path(haproxy.config_file_path))
                backends = {n: b for n, b in backends.items() if parsed.servers.get(b)}
                wanted = sorted(set(backends.values()))  # (none: a first start, no question)
                answers = await applier.servers_of(wanted) if wanted else {}
        except Exception as exc:  # (nothing kept: as before, the registry's answer decides)
            event(log, "startup_haproxy_servers_unread", level=logging.WARNING,
                  error=f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
            return
        for name, backend in backends.items():
            states = answers.get(backend) or {}
            lines = parsed.servers.get(backend, {})
            zones = _zones(parsed, backend, config.zone, config.services[name].zone_routing)
            found = [_found(line, backend, place, zones)
                     for place, line in enumerate(lines.values())
                     if states.get(line.name, "MAINT") != "MAINT"]  # fmt: skip
            if kept := tuple(f for f in found if f is not None):
                self._found[name] = kept
        if self._found:
            event(log, "startup_servers_from_haproxy", level=logging.WARNING,
                  services=sorted(self._found), servers=sum(map(len, self._found.values())),
                  until="their registry answers")  # fmt: skip

    def take(self, name: str, kept: Selection | None) -> list[Found] | None:
        """``name``'s servers while it has no report: HAProxy's (once: a service a SIGHUP
        removes and adds again starts afresh), then the selection made from them."""
        if kept is not None:
            return list(selection_found(kept)) if kept.origin == ORIGIN_HAPROXY else None
        found = self._found.pop(name, None)
        return list(found) if found is not None else None


def _parsed(path: Path) -> ParsedConfig:
    """The config file HAProxy runs, parsed (in a thread: a large one takes ~0.1 s)."""
    text = read_text(path)
    return parse_config(text) if text else ParsedConfig()


def _zones(
    parsed: ParsedConfig, backend: str, local: str | None, routing: ZoneRouting | None
) -> tuple[str, dict[str, str]]:
    """A zone-routed service's zone label and its servers' zones (the label is not in
    the file): those ``<backend>_zone_<zone>`` holds, and the backend's servers HAProxy
    does not run as backups (the local zone's). Without, they would all turn backups."""
    if routing is None:
        return "", {}
    zoned: dict[str, str] = {}
    if local is not None:
        own = parsed.servers.get(backend, {})
        zoned.update((n, local) for n, line in own.items() if "backup" not in line.tail.split())
    prefix = zone_backend_name(backend, "")
    for proxy, lines in parsed.servers.items():
        if proxy.startswith(prefix):
            zoned.update(dict.fromkeys(lines, proxy.removeprefix(prefix)))
    return routing.label, zoned


def _found(
    line: ServerLine,
    backend: str,
    place: int = 0,
    zones: tuple[str, dict[str, str]] = ("", {}),
) -> Found | None:
    """A server line as the registration it was made from (``model.server_name``'s
    ``name_host:port``; a line of another shape keeps its whole name as the name). Its
    ``place`` in the file is its sequence: a ``leader_election`` service (HAProxy runs
    its leader alone) elects that server, not none (no sequence fails an election)."""
    host, _, port = line.address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isascii() or not port.isdigit():
        return None
    base = server_name(host, int(port), None)
    name = line.name.removesuffix(f"_{base}") if line.name != base else base
    tokens = line.tail.split()
    weight = tokens[tokens.index("weight") + 1] if "weight" in tokens[:-1] else None
    record: dict[str, Any] = {"host": host, "port": int(port), "name": name or line.name}
    label, zoned = zones
    if line.name in zoned:
        record["labels"] = {label: zoned[line.name]}
    if weight is not None and weight.isascii() and weight.isdigit():
        record["weight"] = int(weight)
    try:
        origin = f"{ORIGIN_HAPROXY}:{backend}/{line.name}"
        return Found(registration_from_dict(record), origin, place)
    except InvalidRecord:
        return None
