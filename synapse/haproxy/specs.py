"""What synapse makes of each backend and server: its config line's options, and what the
runtime API may do to it. A ``ServerSpec`` holds a server line's options and those ``add
server`` needs to create the same server at runtime (HAProxy does not apply
``default-server`` to added servers); ids come from a stable hash of the name (ids HAProxy
uses are kept). A ``BackendSpec`` adds what the balance algorithm allows."""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from smartstack.strings import share
from synapse.config import ServiceHAProxyConfig
from synapse.haproxy.configtext import join_options, structural_options
from synapse.haproxy.edge import server_options as edge_server_options
from synapse.haproxy.hosts import added_init_addr, is_ip
from synapse.haproxy.server_ids import assign_ids, default_order_seed
from synapse.model import DesiredService, Server
from synapse.server_host import HOST

# Algorithms taking `add server`/`set weight` (HAProxy 2.6; hash: with `hash-type consistent`).
_DYNAMIC_ALGORITHMS = frozenset({"roundrobin", "leastconn", "first", "random"})
_STATIC_ALGORITHMS = frozenset({"static-rr"})
# Server keywords `add server` refuses on 2.6, with how many arguments each takes. In
# `default-server` lines they are left out of added servers; on a server's own line they
# mean the server can only arrive by a reload.
NOT_DYNAMIC_KEYWORDS: dict[str, int] = {
    "cookie": 1, "init-addr": 1, "resolvers": 1, "resolve-prefer": 1, "resolve-net": 1,
    "resolve-opts": 1, "redir": 1, "namespace": 1, "socks4": 1, "log-proto": 1, "tcp-ut": 1,
    "no-check": 0, "no-backup": 0, "no-send-proxy": 0, "no-send-proxy-v2": 0,
    "no-agent-check": 0, "no-check-ssl": 0, "no-ssl": 0, "no-verifyhost": 0, "no-tfo": 0,
    "no-send-proxy-v2-ssl": 0, "no-send-proxy-v2-ssl-cn": 0, "no-ssl-reuse": 0,
    "ssl-reuse": 0, "disabled": 0, "enabled": 0,
}  # fmt: skip
# HAProxy 2.6 gives a server added at runtime no idle-connection pool (`show servers conn`:
# idle_lim 0, purge_delay 0), where a configured server gets the documented defaults
# (pool-max-conn -1, pool-purge-delay 5s): without them every request through an added
# server opens a new backend connection. Spelled out unless the options set them.
DYNAMIC_SERVER_DEFAULTS = (("pool-max-conn", "-1"), ("pool-purge-delay", "5s"))
# fullmatch, never `$`: `$` also matches before a trailing newline.
_SERVER_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,255}", re.ASCII)
# Both at once (neither has a space): the name is at most 255 characters, the host 253.
_NAME_AND_HOST = re.compile(r"[A-Za-z0-9_.:-]{1,255} [A-Za-z0-9_.:-]{1,253}", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ServerTraits(NamedTuple):
    """What a server's own options decide, given its backend's ``default-server`` lines:
    one object per backend and options, shared by the ServerSpecs of its servers."""

    pool: str  # connection-pool defaults `add server` gets (those the options do not set)
    weight: int  # effective weight (HAProxy's default is 1)
    check: bool  # health checks enabled
    disabled: bool  # `disabled`: HAProxy runs it in maintenance, synapse keeps it there
    refused: str | None  # an option `add server` refuses
    add_parts: tuple[str, str]  # `add server`'s options before and after the id
    address_by: str = ""  # a DNS name's address: "" synapse's, or "init-addr"/"resolvers"


class ServerSpec(NamedTuple):
    """One server as synapse configures it.

    A NamedTuple, not a frozen dataclass: as immutable, built in ~0.5 us instead of ~4 us
    (20,000 at a 1,000 x 20 cold start). What the options decide is one shared
    ServerTraits (four fields fewer per server: ~0.8 MB at 1,000 x 20). Compare specs
    only with specs."""

    backend: str
    name: str
    host: str
    port: int
    id: int | None
    cookie: str | None  # the line's `cookie V` (see ServerLine)
    tail: str  # the config line's options after `id N` and `cookie V` (shared)
    traits: ServerTraits
    why_not_addable: str = ""  # "": `add server` can create it as configured
    answer: str = ""  # a DNS name's address as synapse looked it up, when synapse sets it

    @property
    def weight(self) -> int:
        return self.traits.weight

    @property
    def check(self) -> bool:
        return self.traits.check

    @property
    def disabled(self) -> bool:
        return self.traits.disabled

    @property
    def add_parts(self) -> tuple[str, str]:
        """`add_options` around the id (shared by the servers of a backend with the same
        options: one pair per backend and options, not one string per server)."""
        return self.traits.add_parts

    @property
    def addable(self) -> bool:
        return not self.why_not_addable

    @property
    def options(self) -> str:
        """What follows the address on the config line."""
        return join_options(self.id, self.cookie, self.tail)

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def add_address(self) -> str:
        """Where `add server` puts it (a name at synapse's answer: 2.6 adds it unresolved)."""
        host = self.answer or self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def line(self) -> str:
        return f"server {self.name} {self.address} {self.options}".rstrip()

    @property
    def add_options(self) -> str:
        """The same server for `add server`, default-server options spelled out."""
        ident = f"id {self.id}" if self.id is not None else ""
        return " ".join(filter(None, (self.add_parts[0], ident, self.add_parts[1])))


@dataclass(frozen=True)
class BackendSpec:
    """A service's backend: its servers and what the runtime API can do to it."""

    service: str
    name: str
    servers: dict[str, ServerSpec]  # in rendered order
    balance: str  # effective algorithm, e.g. "roundrobin", "static-rr", "source (map-based)"
    dynamic: bool  # servers can be added and weights set at runtime
    static_servers: frozenset[str] = frozenset()  # `server` lines from the service's own config


def _last_value(lines: Iterable[str], keyword: str) -> str | None:
    """The arguments of the last line starting with ``keyword``, or None."""
    value = None
    for line in lines:
        tokens = line.split()
        if tokens and tokens[0].lower() == keyword:
            value = " ".join(tokens[1:])
    return value


def _default_server_options(lines: Iterable[str]) -> list[str]:
    return [
        " ".join(line.split()[1:])
        for line in lines
        if line.split() and line.split()[0] == "default-server"
    ]


def _drop_keywords(options: str, drop: Mapping[str, int]) -> str:
    tokens = options.split()
    kept: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in drop:
            index += 1 + drop[token]
            continue
        kept.append(token)
        index += 1
    return " ".join(kept)


def _find_keyword(options: str, keywords: Iterable[str]) -> str | None:
    tokens = set(options.split())
    return next((k for k in keywords if k in tokens), None)


def _effective_weight(options: str) -> int:
    weight = 1
    tokens = options.split()
    for index, token in enumerate(tokens[:-1]):
        value = tokens[index + 1]
        if token == "weight" and value.isascii() and value.isdigit():
            weight = int(value)
    return weight


def _last_flag(options: str, on: str, off: str) -> bool:
    """Whether the last of the flags ``on``/``off`` in ``options`` is ``on``."""
    value = False
    for token in options.split():
        if token in (on, off):
            value = token == on
    return value


def _balance(backend_lines: list[str], defaults: list[str]) -> tuple[str, bool]:
    """(description, dynamic) of the backend's effective `balance` and `hash-type`."""
    balance = _last_value(backend_lines, "balance") or _last_value(defaults, "balance")
    algorithm = (balance or "roundrobin").split()[0].lower()
    if algorithm.split("(")[0] in _DYNAMIC_ALGORITHMS:  # `random(2)` is random
        return algorithm, True
    if algorithm in _STATIC_ALGORITHMS:
        return algorithm, False
    hash_type = _last_value(backend_lines, "hash-type") or _last_value(defaults, "hash-type")
    method = (hash_type or "map-based").split()[0].lower()
    return f"{algorithm} ({method})", method == "consistent"


def _bad_server_field(server: Server) -> str | None:
    """Defence in depth: records are validated upstream, but nothing unsafe reaches a line."""
    port, options = server.port, server.registry_options
    if (  # the common case in one match (a server is checked at every render of it)
        _NAME_AND_HOST.fullmatch(f"{server.name} {server.host}")
        and type(port) is int
        and 1 <= port <= 65535
        and not (options and (_CONTROL.search(options) or "#" in options))
    ):
        return None
    if not _SERVER_NAME.fullmatch(server.name):
        return f"server name {server.name[:64]!r} has characters HAProxy does not allow"
    if not HOST.fullmatch(server.host):
        return f"host {server.host[:64]!r} is not an address"
    if isinstance(server.port, bool) or not 1 <= server.port <= 65535:
        return f"port {server.port!r} is outside 1-65535"
    if _CONTROL.search(server.registry_options) or "#" in server.registry_options:
        return "registry server options contain a control character or '#'"
    return None


@functools.lru_cache(maxsize=256)  # (backends mostly share them: 1,000 alike at a cold start)
def _traits(own: str, default_server: tuple[str, ...], inherited: str) -> ServerTraits:
    """``inherited``: the default-server options `add server` must spell out (they lead)."""
    given = set(f"{inherited} {own}".split())
    pool = " ".join(f"{k} {v}" for k, v in DYNAMIC_SERVER_DEFAULTS if k not in given)
    effective = " ".join([*default_server, own])
    return ServerTraits(
        pool,
        _effective_weight(effective),
        _last_flag(effective, "check", "no-check"),
        _last_flag(effective, "disabled", "enabled"),
        _find_keyword(own, NOT_DYNAMIC_KEYWORDS),
        (inherited, " ".join(filter(None, (pool, own)))),
        next((k for k in ("init-addr", "resolvers") if k in effective.split()), ""),
    )


@dataclass(frozen=True, slots=True)
class BackendBase:
    """What a backend's lines (and the defaults) decide for every server of it."""

    static: frozenset[str]  # names of `server` lines written in the config itself
    cookies: bool
    persistent: bool
    balance: str
    dynamic: bool
    default_server: list[str]
    inherited: str


class BackendBuilder:
    """Builds BackendSpecs for one ``haproxy`` config block (its defaults, id space, seed)."""

    def __init__(self, defaults: list[str], max_server_id: int, seed: int | None) -> None:
        self.defaults = defaults
        self.max_server_id = max_server_id
        self.seed = default_order_seed() if seed is None else seed
        # A seeded shuffle's permutation depends only on the length: one per backend size,
        # not a seeded Random per backend (~25 us each: 1,000 backends at a cold start).
        self._orders: dict[int, list[int]] = {}
        # Options -> traits, per inheritance: kept from one change to the next (built per
        # new server otherwise, on the express path); bounded (%{host} makes them many).
        self._traits: dict[tuple[str, ...], dict[str, ServerTraits]] = {}

    def base(self, backend_lines: list[str]) -> BackendBase:
        """The servers' shared settings (callers cache it per service config)."""
        defaults = self.defaults
        static = frozenset(
            line.split()[1]
            for line in backend_lines
            if line.split()[:1] == ["server"] and len(line.split()) > 1
        )
        mode = _last_value(backend_lines, "mode") or _last_value(defaults, "mode") or "tcp"
        cookies = mode.split()[0].lower() == "http"
        # With cookie persistence an added server (which cannot have a cookie) would never
        # get sticky clients: such servers arrive by a reload instead.
        persistent = cookies and bool(
            _last_value(backend_lines, "cookie") or _last_value(defaults, "cookie")
        )
        balance, dynamic = _balance(backend_lines, defaults)
        default_server = _default_server_options(defaults) + _default_server_options(backend_lines)
        inherited = _drop_keywords(" ".join(default_server), NOT_DYNAMIC_KEYWORDS)
        return BackendBase(static, cookies, persistent, balance, dynamic, default_server, inherited)

    def backend(
        self,
        service: DesiredService,
        backend_lines: list[str],
        known: Mapping[str, int],
        warnings: list[str],
        base: BackendBase | None = None,
        previous: tuple[DesiredService, BackendSpec] | None = None,
    ) -> BackendSpec:
        """``previous``: the same service's last render (same config object) and its spec:
        a server equal to one it had, with the same id, keeps its ServerSpec (a change of
        servers builds only the new servers' specs: ~12 us each)."""
        hap = service.config.haproxy
        name = service.backend_name
        b = base or self.base(backend_lines)
        static, cookies, persistent = b.static, b.cookies, b.persistent
        default_server, inherited = b.default_server, b.inherited

        servers: dict[str, Server] = {}
        for server in service.servers:
            problem = _bad_server_field(server)
            if problem is None and (server.name in servers or server.name in static):
                problem = f"server name {server.name} is used twice"
            if problem is not None:
                warnings.append(f"service {service.name}: {problem}: server skipped")
                continue
            servers[server.name] = server
        ids = assign_ids(
            servers,
            keep=known,
            reserved=[i for n, i in known.items() if n not in servers],
            max_id=self.max_server_id,
        )
        specs = {}
        options = edge_server_options(hap)
        traits = self._traits.setdefault((inherited, *default_server), {})
        if len(traits) > 512 or len(self._traits) > 512:
            self._traits.clear()
            traits = self._traits[(inherited, *default_server)] = {}
        before: dict[str, Server] = {}
        kept: Mapping[str, ServerSpec] = {}
        if previous is not None and previous[0].config is service.config:
            # (reversed: of servers sharing a name the first made the spec, the rest were not)
            before = {s.name: s for s in reversed(previous[0].servers)}
            kept = previous[1].servers
        for server_name in self._order(hap, servers):
            server = servers[server_name]
            old, spec = before.get(server_name), kept.get(server_name)
            if spec is not None and spec.id == ids[server_name] and (old == server):
                specs[server_name] = spec  # (built from an equal server, same config)
                continue
            specs[server_name] = self._server_spec(
                name,
                hap,
                server,
                ids[server_name],
                cookies,
                options,
                (default_server, inherited),
                traits,
            )
            if persistent and specs[server_name].addable:
                specs[server_name] = specs[server_name]._replace(
                    why_not_addable="the backend persists on cookies, added servers have none",
                )
        return BackendSpec(service.name, name, specs, b.balance, b.dynamic, static)

    def _order(self, hap: ServiceHAProxyConfig, servers: Mapping[str, Server]) -> list[str]:
        names = list(servers)
        if hap.backend_order in ("asc", "desc"):
            return sorted(names, reverse=hap.backend_order == "desc")
        if hap.backend_order == "no_shuffle":
            return names
        # Shuffle the sorted names with the per-host seed: each host spreads its first
        # connections differently, and a re-render never reorders an unchanged set.
        names.sort()
        order = self._orders.get(len(names))
        if order is None:
            order = self._orders[len(names)] = list(range(len(names)))
            random.Random(self.seed).shuffle(order)
        return [names[i] for i in order]

    def _server_spec(
        self,
        backend: str,
        hap: ServiceHAProxyConfig,
        server: Server,
        server_id: int | None,
        cookies: bool,
        service_options: str,
        inheritance: tuple[list[str], str],
        traits: dict[str, ServerTraits],
    ) -> ServerSpec:
        port = server.port  # server_port_override is applied before naming (selection.py)
        options = service_options
        if "%{" in options:  # (names and hosts hold no '%': the order of replaces is moot)
            options = options.replace("%{host}", server.host)
            options = options.replace("%{port}", str(port)).replace("%{name}", server.name)
        registry = server.registry_options.strip()
        if server.weight is not None:
            # The record's weight wins over any weight in the options (Airbnb behaviour).
            options = _drop_keywords(options, {"weight": 1})
            registry = _drop_keywords(registry, {"weight": 1})
        own = f"{options} {registry}" if options and registry else options or registry
        if server.weight is not None:
            own = f"{own} weight {server.weight}".strip()
        if server.backup:  # zone routing: another zone's server (synapse.zone_apply)
            own = f"{own} backup".strip()

        cookie = None
        if cookies:
            cookie = server.name
            if hap.cookie_value_method == "hash":
                cookie = hashlib.sha1(server.name.encode(), usedforsecurity=False).hexdigest()
        trait = traits.get(own)
        if trait is None:
            trait = traits[own] = _traits(own, tuple(inheritance[0]), inheritance[1])

        why_not = answer = ""
        if not is_ip(server.host):  # (its traits are the options' without init-addr)
            # (else one bad name fails every check, a silent resolver stalls every parse)
            if trait.address_by != "init-addr":  # (the operator's wins)
                own = added_init_addr(own, server.address or None)
            # added and moved at synapse's answer; none yet, or HAProxy's `resolvers`: reload
            if not (answer := "" if trait.address_by else server.address):
                why_not = f"host {server.host} is a DNS name without synapse's answer"
        if trait.refused:
            why_not = f"option {trait.refused!r} cannot be set on an added server"
        return ServerSpec(  # positional: (backend, name, host, port, id, options, ...)
            backend,
            server.name,
            server.host,
            port,
            server_id,
            cookie,
            share(own),  # shared with the other servers' and the parsed config's lines
            trait,
            why_not,
            answer,
        )


def same_runtime_options(old: BackendSpec, new: BackendSpec) -> bool:
    """Whether the servers both specs have differ at most in what the runtime API sets
    (id, weight, disabled: the planner's ``structural_options``)."""
    for name, spec in new.servers.items():
        before = old.servers.get(name)
        if before is None or (before.cookie == spec.cookie and before.tail is spec.tail):
            continue
        if structural_options(before.options) != structural_options(spec.options):
            return False
    return True
