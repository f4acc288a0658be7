"""From what a watcher found to the servers a service should have (pure, no I/O).

Implements the per-service keys every Airbnb watcher honours: ``label_filters``,
``default_servers``, ``keep_default_servers``, ``use_previous_backends``,
``backend_port_override`` (and its alias ``haproxy.server_port_override``) and
``leader_election``, plus our opt-in for registry ``haproxy_server_options``.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from smartstack.record import Registration, registration_from_dict
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.discovery_config import LabelFilter
from synapse.model import Found, Server, server_name
from synapse.server_options import filter_server_options

# Where a service's current servers came from (shown on /status).
ORIGIN_DISCOVERY = "discovery"
ORIGIN_DEFAULT = "default_servers"
ORIGIN_PREVIOUS = "previous"  # use_previous_backends kept the last list
ORIGIN_STATE_FILE = "state_file"  # registry not answered yet: cached servers
ORIGIN_HAPROXY = "haproxy"  # neither answered nor cached: those HAProxy runs (adopted_servers)
ORIGIN_NONE = "none"
DEFAULT_SERVER_ORIGIN = "default"  # a default server's Server.origin
# A Server.origin's prefix: kept only by a partial report's hold (reload_diff.Holds), not seen
HELD_ORIGIN = "held:"


# What a server's record is made from: its registration (the port is the server's), or
# the record itself (default servers, an elected leader with its sequence as "id").
RecordSource = Registration | dict[str, Any]


@dataclass(frozen=True)
class Selection:
    """A service's servers, each with its record as file_output and the state file write it."""

    servers: tuple[Server, ...] = ()
    sources: tuple[RecordSource, ...] = ()  # aligned with servers: see ``records``
    origin: str = ORIGIN_NONE
    dropped_options: tuple[str, ...] = field(default=(), compare=False)
    leader_failed: bool = field(default=False, compare=False)  # leader_election found no leader
    # What its discovered servers were made with (``_basis``): the next selection reuses a
    # server whose registration is the very same object (``_reusable``).
    basis: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)
    # Records' server options left off because registry_server_options.allow is false
    # (distinct, sorted): Ruby would append them, so synapse.options_report says so.
    ignored_options: tuple[str, ...] = field(default=(), compare=False)
    # Records listed whose every one the label filters dropped (0: one passed): a typo in a
    # filter's value must be said, not just serve nothing. An empty list keeps the previous
    # selection's count: only a record that passes ends it (label_filters_match_again) -
    # unless the filters changed (a SIGHUP's fix): the count was the old filters'.
    unmatched: int = field(default=0, compare=False)
    filters: tuple[LabelFilter, ...] = field(default=(), compare=False)  # ``unmatched``'s

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def records(self) -> tuple[dict[str, Any], ...]:
        """Airbnb backend hashes, aligned with servers. Built when asked (file_output, the
        state file), not kept: a dict per server was ~180 bytes of every selection."""
        return tuple(
            _as_record(source, server)
            for source, server in zip(self.sources, self.servers, strict=True)
        )


def _as_record(source: RecordSource, server: Server) -> dict[str, Any]:
    if isinstance(source, Registration):
        record = source.to_dict()
        record["port"] = server.port
        return record
    return dict(source)


def labels_match(labels: Mapping[str, str], filters: Sequence[LabelFilter]) -> bool:
    """Airbnb's label_filters: every filter must hold (a missing label is not equal)."""
    for rule in filters:
        value = labels.get(rule.label)
        if rule.condition == "equals" and value != rule.value:
            return False
        if rule.condition == "not-equals" and value == rule.value:
            return False
    return True


def filters_text(filters: Sequence[LabelFilter]) -> str:
    """``zone=az1,canary!=true``: label filters as a log field."""
    return ",".join(
        f"{f.label}{'!=' if f.condition == 'not-equals' else '='}{f.value}" for f in filters
    )


def no_server_reason(found: Sequence[Found], filters: Sequence[LabelFilter]) -> str | None:
    """Why a discovery's list gives its service no server; None when a record passes the
    label filters (a SIGHUP's new watcher: synapse.watcher_swap waits for one)."""
    if not found:
        return "the new discovery lists no servers"
    if any(labels_match(item.registration.labels, filters) for item in found):
        return None
    return f"{len(found)} records, every one dropped by label_filters {filters_text(filters)}"


def _record(server: Server, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": extra.get("name"), "host": server.host, "port": server.port, **extra}


def default_selection(config: ServiceConfig, port_override: int | None = None) -> Selection:
    servers: list[Server] = []
    records: list[RecordSource] = []
    use_weight = config.haproxy.use_nerve_weights
    for entry in config.default_servers:
        port = port_override or entry.port
        assert port is not None  # the config refuses default servers without a port
        options, weight = entry.haproxy_server_options, entry.weight
        server = Server(name=server_name(entry.host, port, entry.name), host=entry.host,
                        port=port, weight=weight if use_weight else None,
                        registry_options=options or "", origin=DEFAULT_SERVER_ORIGIN)  # fmt: skip
        servers.append(server)
        extra: dict[str, Any] = {"name": entry.name or f"{entry.host}:{port}"}
        extra.update({k: v for k, v in (("weight", weight), ("haproxy_server_options", options))
                      if v is not None})  # fmt: skip
        records.append(_record(server, extra))
    return Selection(tuple(servers), tuple(records), ORIGIN_DEFAULT)


def elect_leader(found: Sequence[Found]) -> list[Found]:
    """Airbnb's ``leader_election``: only the registration with the lowest sequence number.

    ZooKeeper: the numeric suffix of the child's name (nerve's sequential znodes); etcd: the
    key's create revision. When any candidate has no sequence (a fixed-name znode, a watcher
    without one) the election fails, as in Ruby: no discovered server.
    """
    if not found or any(item.sequence is None for item in found):
        return []
    return [min(found, key=lambda item: (item.sequence, item.origin))]


def _basis(config: ServiceConfig, options_policy: RegistryServerOptions | None) -> tuple[Any, ...]:
    """What a discovered server is made from besides its registration and origin."""
    return (config, options_policy)


def _reusable(previous: Selection | None, basis: tuple[Any, ...]) -> dict[int, tuple[Any, Server]]:
    """The previous selection's servers by their registration's id, when made from the very
    same config and policy (by identity: an equal copy just builds them again). A change
    touches one record of a service: the others keep their Server (no name, no labels
    sorted, no frozen dataclass built per record and report)."""
    if previous is None or previous.basis is None or len(previous.basis) != len(basis):
        return {}
    if not all(map(operator.is_, previous.basis, basis)):
        return {}
    return {id(source): (source, server)
            for source, server in zip(previous.sources, previous.servers, strict=True)}  # fmt: skip


def discovered_selection(
    config: ServiceConfig,
    found: Sequence[Found],
    options_policy: RegistryServerOptions | None,
    origin: str = ORIGIN_DISCOVERY,
    previous: Selection | None = None,
    filters: Sequence[LabelFilter] | None = None,
) -> Selection:
    """Label-filtered, port-overridden servers from registrations, deduplicated by name;
    a server of ``previous`` is reused for the very same registration (``_reusable``).
    ``filters``: the report's (its watcher's discovery), else the config's."""
    use_weight = config.haproxy.use_nerve_weights
    basis = _basis(config, options_policy)
    reuse = _reusable(previous, basis)
    servers: list[Server] = []
    records: list[RecordSource] = []
    dropped: list[str] = []
    ignored: set[str] = set()
    # (no policy: no HAProxy config, nothing the options would go into)
    ignoring = options_policy is not None and not options_policy.allow
    seen: set[str] = set()
    leader_failed = False
    filters = config.discovery.label_filters if filters is None else filters
    listed = len(found)
    found = [item for item in found if labels_match(item.registration.labels, filters)]
    unmatched = listed if filters and not found else 0
    if filters and not listed and previous is not None and previous.filters == tuple(filters):
        unmatched = previous.unmatched  # (an empty list proves no filter right or wrong)
    if config.leader_election:
        elected = elect_leader(found)
        leader_failed = bool(found) and not elected
        found = elected
    for item in found:
        reg = item.registration
        options = ""
        if options_policy is not None and options_policy.allow:
            filtered = filter_server_options(reg.haproxy_server_options, options_policy.keywords)
            options = filtered.text
            dropped.extend(f"{item.origin}: {reason}" for reason in filtered.dropped)
        kept = reuse.get(id(reg))
        if kept is not None and kept[0] is reg and kept[1].origin == item.origin:
            server = kept[1]  # (its options were made from this registration and policy)
        else:
            server = Server.from_registration(
                reg,
                origin=item.origin,
                port_override=config.port_override,
                use_weight=use_weight,
                registry_options=options,
            )
        if server.name in seen:
            continue
        seen.add(server.name)
        servers.append(server)
        if ignoring and reg.haproxy_server_options:
            ignored.add(reg.haproxy_server_options)
        if config.leader_election and item.sequence is not None:
            # Ruby's backend 'id': the state file keeps it for an election after a restart
            records.append({**reg.to_dict(), "port": server.port, "id": item.sequence})
        else:
            records.append(reg)
    return Selection(tuple(servers), tuple(records), origin, tuple(dropped), leader_failed, basis,
                     tuple(sorted(ignored)), unmatched, tuple(filters))  # fmt: skip


def _kept_discovered(config: ServiceConfig, previous: Selection) -> Selection | None:
    """``previous``'s discovered servers, with the current defaults beside them when
    ``keep_default_servers``; None when it had none (its defaults are the config's to say).
    A state file's selection is not kept here: it ages (``StateCache.cached``)."""
    pairs = [(s, r) for s, r in zip(previous.servers, previous.sources, strict=True)
             if s.origin != DEFAULT_SERVER_ORIGIN]  # fmt: skip
    if not pairs:
        return None
    if config.keep_default_servers:
        defaults = default_selection(config, config.port_override)
        names = {s.name for s, _ in pairs}
        pairs += [(s, r) for s, r in zip(defaults.servers, defaults.sources, strict=True)
                  if s.name not in names]  # fmt: skip
    return Selection(tuple(s for s, _ in pairs), tuple(r for _, r in pairs), ORIGIN_PREVIOUS,
                     basis=previous.basis, ignored_options=previous.ignored_options)  # fmt: skip


def selection_found(selection: Selection) -> tuple[Found, ...]:
    """A selection's discovered servers as found registrations (its defaults left out):
    what a partial report keeps (``synapse.reload_diff.Holds``)."""
    found = []
    for server, source in zip(selection.servers, selection.sources, strict=True):
        if server.origin == DEFAULT_SERVER_ORIGIN:
            continue
        if isinstance(source, Registration):
            found.append(Found(source, server.origin))
        else:  # a leader's record: its sequence is its "id"
            sequence = source.get("id")
            found.append(Found(registration_from_dict(source), server.origin,
                               sequence if isinstance(sequence, int) else None))  # fmt: skip
    return tuple(found)


def select_servers(
    config: ServiceConfig,
    found: Sequence[Found] | None,
    previous: Selection | None,
    options_policy: RegistryServerOptions | None = None,
    origin: str = ORIGIN_DISCOVERY,
    filters: Sequence[LabelFilter] | None = None,
) -> Selection:
    """The servers a service should have now.

    ``found`` is the watcher's (or the state file's) list, None when nothing is known yet.
    Follows Airbnb's set_backends/update_backends: defaults join the discovered servers
    with ``keep_default_servers`` (and get ``backend_port_override`` too); an empty result
    falls back to ``default_servers``, else with ``use_previous_backends`` to the previous
    list (whatever that setting when ``found`` is None: nothing is known yet, so the
    previous list's discovered servers stay, with the current defaults beside them only
    with ``keep_default_servers``). Unlike Airbnb, label filters apply to discovered
    servers only, so defaults never vanish because they carry no labels. ``filters``: the
    report's (its watcher's label filters), else the config's: the running watcher's lists
    keep its own filters until a SIGHUP's new watcher takes over (synapse.watcher_swap).
    """
    if found is None and previous is not None and previous.origin != ORIGIN_STATE_FILE:
        kept = _kept_discovered(config, previous)
        if kept is not None:  # not heard from yet (a SIGHUP's new watcher): no defaults alone
            return kept
    chosen = discovered_selection(config, found or (), options_policy, origin, previous, filters)
    if config.keep_default_servers and config.default_servers:
        defaults = default_selection(config, config.port_override)
        names = {s.name for s in chosen.servers}
        extra = [(s, r) for s, r in zip(defaults.servers, defaults.sources, strict=True)
                 if s.name not in names]  # fmt: skip
        chosen = Selection(
            chosen.servers + tuple(s for s, _ in extra),
            chosen.sources + tuple(r for _, r in extra),
            chosen.origin if chosen.servers else ORIGIN_DEFAULT,
            chosen.dropped_options,
            chosen.leader_failed,
            chosen.basis,
            chosen.ignored_options,
            chosen.unmatched,
            chosen.filters,
        )
    if chosen.servers:
        return chosen
    if config.default_servers:
        return replace(default_selection(config), leader_failed=chosen.leader_failed,
                       unmatched=chosen.unmatched, filters=chosen.filters)  # fmt: skip
    # Not heard from yet (a new watcher after a SIGHUP) is not "returns nothing": kept.
    keep_previous = config.use_previous_backends or found is None
    if keep_previous and previous is not None and previous.servers:
        origin_kept = previous.origin if previous.origin == ORIGIN_STATE_FILE else ORIGIN_PREVIOUS
        return Selection(previous.servers, previous.sources, origin_kept, basis=previous.basis,
                         ignored_options=previous.ignored_options,
                         unmatched=chosen.unmatched, filters=chosen.filters)  # fmt: skip
    return Selection(
        origin=ORIGIN_NONE if found is None else origin,
        unmatched=chosen.unmatched,
        filters=chosen.filters,
    )
