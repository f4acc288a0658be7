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
only where HAProxy's runtime API lists that server in that backend, not in maintenance
(asked through synapse's admin socket, else those the config file declares: ``_states``).
A backend HAProxy does not run, or a socket that does not answer (no HAProxy was
adopted), keeps nothing: no server is invented.

Where the state file is behind HAProxy (``StateCache.behind_haproxy``: the config file
changed since this synapse last wrote it) the two are merged. After a rollback an older
synapse ran HAProxy, which never updates the default file: it still held a server whose
instance had left (its port then answered as another service: 300 of 600 requests got
that service's 200s) and lacked the one that came. So the file's servers HAProxy no
longer runs are marked left, those it runs that the file lacks are added (what their
server line tells), and those both have keep the file's record: its labels and options
(``label_filters``, ``backup``) are not in the config file. The merge is written back
(never erased: a reboot with the registry still down serves it again).

A server rebuilt from its line gets the labels its service's ``label_filters`` require
(HAProxy runs it because a filter kept it; without, a filtered service lost every server:
400 of 400 503s) and, where registry options are allowed, the allowed ones its line has
beyond the service's own (a ``backup`` took live traffic: 200 of 400 requests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse.atomic import read_text
from synapse.config import SynapseConfig
from synapse.contract import Applier
from synapse.haproxy.configtext import ParsedConfig, ServerLine, parse_config
from synapse.haproxy.edge import server_options
from synapse.haproxy.hosts import is_ip, without_init_addr
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import unix_stats_sockets
from synapse.haproxy.sockets import HAProxySocketError, SocketUnavailable
from synapse.model import Found, server_name
from synapse.selection import ORIGIN_HAPROXY, Selection, selection_found
from synapse.server_options import filter_server_options
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
        """Read what HAProxy runs for those of ``names`` the state file has no servers for
        (for all of them when the file is behind HAProxy: ``StateCache.behind_haproxy``)."""
        haproxy = config.haproxy
        if applier is None or haproxy is None or not haproxy.config_file_path:
            return
        behind = cache is not None and cache.behind_haproxy
        backends = {
            name: service.haproxy.backend_name or name
            for name in names
            if (service := config.services.get(name)) is not None
            and not service.haproxy.disabled
            and (behind or not (cache is not None and cache.cached(name)))
        }
        if not backends:
            return
        try:  # (bounded: a start must not hang on a socket)
            async with asyncio.timeout(READ_WAIT):
                parsed = await asyncio.to_thread(_parsed, Path(haproxy.config_file_path))
                asked = {n: b for n, b in backends.items() if parsed.servers.get(b)}
                wanted = sorted(set(asked.values()))  # (none: a first start, no question)
                answers = await _states(applier, parsed, wanted) if wanted else {}
        except Exception as exc:  # (nothing kept: as before, the registry's answer decides)
            event(log, "startup_haproxy_servers_unread", level=logging.WARNING,
                  error=f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
            return
        running: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for name, backend in asked.items():
            states = answers.get(backend) or {}
            lines = parsed.servers.get(backend, {})
            shape = _shape(parsed, backend, config, name)
            running[name] = [(place, record) for place, line in enumerate(lines.values())
                             if states.get(line.name, "MAINT") != "MAINT"
                             and (record := _record(line, shape)) is not None]  # fmt: skip
            found = [_found(record, backend, place) for place, record in running[name]]
            if kept := tuple(f for f in found if f is not None):
                self._found[name] = kept
        if behind and cache is not None:
            merged = {name: _merged(cache.entries(name), running.get(name, []), cache.clock())
                      for name in _superseded(cache, backends, parsed, answers)}  # fmt: skip
            for name in merged:  # (served from the merged file: its labels and options)
                self._found.pop(name, None)
            await _merge_state(cache, merged)
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


async def _states(
    applier: Applier, parsed: ParsedConfig, backends: list[str]
) -> Mapping[str, Mapping[str, str] | None]:
    """{backend: {server: state}} of ``backends`` in HAProxy: through synapse's admin
    socket, else through those the config file HAProxy runs declares. An HAProxy an older
    synapse started has no socket at this release's path for synapse's own (it moved):
    unread, every server counted as in maintenance and nothing was kept (an upgrade with
    the registry down and no state file: 300 of 300 requests 503). SocketUnavailable when
    none answers (``startup_haproxy_servers_unread``)."""
    answers = await applier.servers_of(backends)
    if any(answer is not None for answer in answers.values()):
        return answers
    errors = []
    for path in unix_stats_sockets(list(parsed.sections.get("global", ()))):
        try:
            _, found = await RuntimeClient(path).read_state(backends, with_pid=False)
        except HAProxySocketError as err:
            errors.append(str(err)[:200])
            continue
        return {b: None if servers is None else {n: s.label for n, s in servers.items()}
                for b, servers in found.items()}  # fmt: skip
    why = "; ".join(errors) or "the config file declares no admin socket"
    raise SocketUnavailable(f"HAProxy's servers read through no admin socket: {why}")


def _superseded(
    cache: StateCache,
    backends: Mapping[str, str],
    parsed: ParsedConfig,
    answers: Mapping[str, Any],
) -> list[str]:
    """The services whose state file servers give way to HAProxy's (the file is behind
    it): those HAProxy answered for, and those the config file runs with no server while
    HAProxy answers (it removed them all). No answer (no HAProxy adopted): the file's."""
    alive = any(answer is not None for answer in answers.values())
    return [
        name
        for name, backend in backends.items()
        if cache.cached(name)
        and (
            answers.get(backend) is not None
            or (alive and backend in parsed.proxies and not parsed.servers.get(backend))
        )
    ]


def _merged(
    entries: Mapping[str, Mapping[str, Any]], running: list[tuple[int, dict[str, Any]]], now: float
) -> dict[str, dict[str, Any]]:
    """A service's servers HAProxy runs, as state file entries stamped ``now``: the file's
    record where it has that server (same name and address: its labels, options, weight
    and id, none of which the config file holds), else the server line's (its place as
    the id, as ``_found``). The file's servers HAProxy does not run are left out."""
    merged: dict[str, dict[str, Any]] = {}
    for place, line in running:
        key = line["key"]
        record = {k: v for k, v in line.items() if k != "key"}
        old = entries.get(key)
        if old is not None and not old.get("left") and _address(old) == _address(record):
            merged[key] = {**old, "timestamp": int(now)}
        else:
            merged[key] = {"timestamp": int(now), **record, "id": place}
    return merged


def _address(record: Mapping[str, Any]) -> tuple[Any, Any]:
    return record.get("host"), record.get("port")


async def _merge_state(cache: StateCache, merged: Mapping[str, dict[str, dict[str, Any]]]) -> None:
    """The file's servers of ``merged``'s services become theirs (written now: a reboot
    with the registry still down must not take back what HAProxy had removed)."""
    if not merged:
        return
    await asyncio.to_thread(cache.replace, merged)
    event(log, "state_file_behind_haproxy", level=logging.WARNING, path=str(cache.path),
          services=sorted(merged), effect="merged with the servers HAProxy runs (its own "
          "no longer run: left out), until their registry answers",
          detail="the config file changed since this synapse wrote it (an older synapse "
          "after a rollback, a hand edit): the state file's servers are older")  # fmt: skip


def _parsed(path: Path) -> ParsedConfig:
    """The config file HAProxy runs, parsed (in a thread: a large one takes ~0.1 s)."""
    text = read_text(path)
    return parse_config(text) if text else ParsedConfig()


@dataclass(frozen=True)
class _Shape:
    """What a service's server lines hold beside their records, to take it back out
    (``_record``): its zones, its own server options, which registry options it takes."""

    zone_label: str = ""  # zone routing's label ("": not zone-routed)
    zoned: Mapping[str, str] = field(default_factory=dict)  # server -> its zone (``_zones``)
    required: Mapping[str, str] = field(default_factory=dict)  # labels its filters require
    own: str = ""  # the service's own server options (``edge.server_options``)
    keywords: tuple[str, ...] | None = None  # registry options it takes (None: none)


def _shape(parsed: ParsedConfig, backend: str, config: SynapseConfig, name: str) -> _Shape:
    service = config.services[name]
    label, zoned = _zones(parsed, backend, config.zone, service.zone_routing)
    # HAProxy runs a server of a label-filtered service because a synapse's filters kept
    # it: the labels they require are its (400 of 400 503s, rebuilt without any).
    required = {f.label: f.value for f in service.discovery.label_filters
                if f.condition == "equals"}  # fmt: skip
    policy = config.haproxy.registry_server_options if config.haproxy else None
    keywords = tuple(policy.keywords) if policy is not None and policy.allow else None
    return _Shape(label, zoned, required, server_options(service.haproxy), keywords)


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


def _record(line: ServerLine, shape: _Shape = _Shape()) -> dict[str, Any] | None:
    """A server line as the record it was made from (``model.server_name``'s
    ``name_host:port``; a line of another shape keeps its whole name as the name), with
    its server name as ``key``; None for a line with no host:port (a unix socket)."""
    host, _, port = line.address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not port.isascii() or not port.isdigit():
        return None
    base = server_name(host, int(port), None)
    name = line.name.removesuffix(f"_{base}") if line.name != base else base
    record: dict[str, Any] = {"key": line.name, "host": host, "port": int(port)}
    record["name"] = name or line.name
    labels = dict(shape.required)
    if line.name in shape.zoned:
        labels[shape.zone_label] = shape.zoned[line.name]
    if labels:
        record["labels"] = labels
    weight, options = _options(line, host, shape)
    if weight is not None and weight.isascii() and weight.isdigit():
        record["weight"] = int(weight)
    if options:  # (a `backup` the file lacks took live traffic: 200 of 400 requests)
        record["haproxy_server_options"] = options
    return record


def _options(line: ServerLine, host: str, shape: _Shape) -> tuple[str | None, str]:
    """The record's weight (the line's last ``weight N``: synapse writes the record's
    after the options) and the registry options the line holds: what follows the
    service's own (``specs`` writes them first, ``%{...}`` replaced), less the init-addr
    synapse gives a DNS-named server and the ``backup`` zone routing gives another
    zone's (last); none when the service takes no registry options."""
    tokens = (line.tail if is_ip(host) else without_init_addr(line.tail)).split()
    if shape.zone_label and tokens[-1:] == ["backup"]:
        tokens = tokens[:-1]
    weight, rest = _unweighted(tokens)
    if shape.keywords is None:
        return weight, ""
    port = line.address.rpartition(":")[2]
    own = shape.own.replace("%{host}", host).replace("%{port}", port)
    _, own_tokens = _unweighted(own.replace("%{name}", line.name).split())
    if rest[: len(own_tokens)] == own_tokens:
        rest = rest[len(own_tokens) :]
    return weight, filter_server_options(" ".join(rest), shape.keywords).text


def _unweighted(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The last ``weight N`` of ``tokens`` (None: none) and the tokens without any."""
    weight, rest, index = None, [], 0
    while index < len(tokens):
        if tokens[index] == "weight" and index + 1 < len(tokens):
            weight, index = tokens[index + 1], index + 2
            continue
        rest.append(tokens[index])
        index += 1
    return weight, rest


def _found(record: dict[str, Any], backend: str, place: int = 0) -> Found | None:
    """A ``_record`` as the registration it was made from. Its ``place`` in the file is its
    sequence: a ``leader_election`` service (HAProxy runs its leader alone) elects that
    server, not none (no sequence fails an election)."""
    fields = {k: v for k, v in record.items() if k != "key"}
    try:
        origin = f"{ORIGIN_HAPROXY}:{backend}/{record['key']}"
        return Found(registration_from_dict(fields), origin, place)
    except InvalidRecord:
        return None
