"""The planner: (desired config, running HAProxy, capabilities) -> runtime operations or a reload.

A pure function, no I/O, and no renderer: its vocabulary is ``synapse.haproxy.desired``
(the input), ``synapse.haproxy.running`` (HAProxy as found) and ``synapse.haproxy.ops``
(the output). The rules:

- Anything structural needs a reload: a section added, removed or changed (new
  or removed service, changed frontend/backend/listen lines, ports, global or
  defaults), a server whose options changed, a static server line, no config file.
- Membership and state go through the runtime API:
  - a server that left: ``set server B/S state maint`` (``remove_servers: delete``:
    then ``del server``, which HAProxy refuses while connections remain; it is
    retried on the next apply). With ``maint``, a backend's leftovers beyond their
    cap are deleted, the ones longest in maintenance first (``leftovers``);
  - a server back (in maint or drain): ``state ready``, unless its options say
    ``disabled`` (then it is kept in, or put into, ``state maint``);
  - a checked server whose checks HAProxy has disabled (an ``add server`` whose
    ``enable health`` never came: synapse stopped between the two, or it failed):
    ``enable health``, before its ``state ready`` (not one a panic holds disabled);
  - a changed weight: ``set weight`` (dynamic algorithms only, else a reload);
  - a changed address of a same-named server: ``set server B/S addr``; for a DNS name,
    a changed answer of synapse's (``dns_addresses``) where its line had one already:
    only the ``init-addr`` differs, and HAProxy 2.6 takes addresses there, not names;
  - a server HAProxy does not have: ``add server`` with its full options, then
    ``enable health`` when it is checked, then ``state ready`` (health first: the
    server then starts like a configured one, up until its checks say otherwise).
    A reload instead when HAProxy < 2.4, the algorithm is not dynamic
    (static-rr, map-based hashing), the host is a DNS name synapse has no answer for
    (with one: added at it), or an option cannot be set on an added server.
- Capacity comes before it goes: within a backend, the ops that add capacity (servers
  back, weights raised, new servers made ready) come before those that take it away
  (weights lowered or set to 0, servers put in maint or deleted), and the runtime client
  keeps that order (``backend_ops``): a round that replaces every server of a backend (a
  redeploy, a blue/green cutover, a changed port) never leaves it without one. A new
  server that only a reload can bring is no capacity: when nothing else would serve,
  the servers that leave go with that reload.
- Without the runtime API (``do_socket: false`` or no answer) every difference in
  the server lines needs a reload, as in Airbnb synapse.

When a reload is needed the plan still carries the runtime operations that are
valid against the running HAProxy: they apply at once while the reload waits for
its turn (rate limiting), so a server that left stops getting traffic now.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping

from synapse.haproxy.configtext import (
    ParsedConfig,
    ServerLine,
    section_changes,
    structural_options,
)
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.leftovers import old_leftovers
from synapse.haproxy.ops import (
    AddServer,
    DelLeftover,
    DelServer,
    EnableHealth,
    Op,
    Plan,
    Reload,
    SetAddr,
    SetState,
    SetWeight,
)
from synapse.haproxy.running import Capabilities, RunningServer, RunningState
from synapse.haproxy.specs import BackendSpec, ServerSpec, is_ip


def plan(
    desired: DesiredConfig,
    running: RunningState,
    capabilities: Capabilities,
    only: Collection[str] | None = None,
) -> Plan:
    """What to do so HAProxy runs ``desired``.

    ``only`` limits the server-by-server comparison to those backends (None: all): the
    controller leaves out backends whose spec and running servers did not change since a
    plan found nothing to do there. Sections and server lines are compared only where
    ``desired.delta`` says they may differ, when the running config is the delta's base.
    """
    reasons: list[tuple[str, str]] = []
    if running.config_missing:
        reasons.append(("config", "no config file yet"))
    elif running.config is not None:
        delta = desired.delta
        if delta is not None and delta.base is not running.config:
            delta = None
        changes = section_changes(running.config, desired.parsed, delta and delta.headers)
        reasons += [("config", f"section {change}") for change in changes]
        reasons += _server_line_changes(running.config, desired, delta and delta.proxies)

    if running.backends is None:
        if capabilities.runtime_api:
            reasons.append(("runtime_unavailable", running.runtime_error or "no runtime API"))
        elif running.config is not None and running.config.servers != desired.parsed.servers:
            reasons.append(("no_runtime", "servers changed and do_socket is false"))
        return Plan((), Reload(tuple(reasons)) if reasons else None)

    ops: list[Op] = []
    ours = desired.backends.keys()
    running_names = running.backends.keys()
    for proxy in sorted(desired.parsed.proxies - running_names):
        kind = "service_added" if proxy in ours else "config"
        reasons.append((kind, f"backend {proxy} is not running"))
    for proxy in sorted(running_names - desired.parsed.proxies):
        reasons.append(("service_removed", f"backend {proxy} is no longer wanted"))
    names = desired.backends if only is None else sorted(b for b in only if b in desired.backends)
    active = set()
    for name in names:
        backend = desired.backends[name]
        servers = running.backends.get(name)
        if servers is not None:
            found = len(ops), len(reasons)
            backend_ops(backend, servers, capabilities, ops, reasons)
            if (len(ops), len(reasons)) != found:
                active.add(name)
    return Plan(tuple(ops), Reload(tuple(reasons)) if reasons else None, frozenset(active))


def _server_line_changes(
    running: ParsedConfig, desired: DesiredConfig, proxies: Collection[str] | None = None
) -> list[tuple[str, str]]:
    """Server lines that only a reload can change (options, static and foreign servers).

    ``proxies``: the only proxies whose server lines may differ (None: any).
    """
    reasons = []
    if proxies is None:
        proxies = set(running.servers) | set(desired.parsed.servers)
    for proxy in sorted(proxies):
        before = running.servers.get(proxy, {})
        after = desired.parsed.servers.get(proxy, {})
        if before is after:  # a piece both configs share
            continue
        spec = desired.backends.get(proxy)
        if spec is None:  # a proxy from extra_sections: its servers are config, not membership
            if before != after:
                reasons.append(("config", f"servers of {proxy} changed"))
            continue
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if name in spec.static_servers:
                if old != new:
                    reasons.append(("config", f"server line {proxy}/{name} changed"))
            elif (
                old is not None
                and new is not None
                # (same cookie and tail: they differ at most in the id; most lines of a
                # changed backend, each planned on the path of a change: not parsed)
                and (old.cookie != new.cookie or old.tail != new.tail)
                and structural_options(old.options) != structural_options(new.options)
                and not _answer_moved(old, new, spec, name)
            ):
                reasons.append(("server_options", f"options of {proxy}/{name} changed"))
    return reasons


def _answer_moved(old: ServerLine, new: ServerLine, backend: BackendSpec, name: str) -> bool:
    """Whether two lines of a DNS-named server differ only in synapse's answer, the old one
    an address too (not ``last,none``: a server without one comes by a reload): ``set
    server addr`` moves it (a reload for each moved name, review s38: up to
    ``restart_interval`` at the old, maybe dead, address)."""
    if old.cookie != new.cookie or "init-addr " not in old.tail:
        return False
    spec = backend.servers.get(name)
    if spec is None or not spec.answer:
        return False
    head, _, before = old.tail.rpartition("init-addr ")
    new_head, _, after = new.tail.rpartition("init-addr ")
    # (the rest as runtime sets it: a weight changed with the move is a `set weight`)
    return (
        is_ip(before)
        and after == spec.answer
        and all(not h or h.endswith(" ") for h in (head, new_head))
        and structural_options(head) == structural_options(new_head)
    )


def _same_address(server: ServerSpec, running: RunningServer) -> bool | None:
    """Whether the running address matches; None when the host is a name synapse has no
    answer for (not comparable)."""
    host = server.answer or server.host  # (a name's: synapse's answer, what HAProxy runs)
    if host == running.addr:  # the usual case, without parsing addresses
        return running.port == server.port
    try:
        wanted = ipaddress.ip_address(host)
        current = ipaddress.ip_address(running.addr)
    except ValueError:
        return None if running.port == server.port else False
    return wanted == current and running.port == server.port


def backend_ops(
    backend: BackendSpec,
    current: Mapping[str, RunningServer],
    capabilities: Capabilities,
    ops: list[Op],
    reasons: list[tuple[str, str]],
) -> None:
    """One backend's servers: the runtime ops into ``ops``, what needs a reload into
    ``reasons`` (also the express path's plan: ``synapse.haproxy.express``).

    The ops come in the order they are to take effect: capacity comes before it goes.
    First the servers HAProxy has (address, checks enabled, raised weights, servers back:
    a server's ``enable health`` and weight before its ``ready``), then the new servers
    (add, health, ready), then lowered weights, and last what takes servers out of the
    balancing: weights set to 0, ``disabled`` servers and the servers that left (maint,
    then ``del server``). The runtime client sends those last ones only after every op
    listed before them for their backend (``synapse.haproxy.runtime._waves``): when one
    round replaces every server, the new ones are ready before the old ones go (else
    HAProxy answers 503 meanwhile).

    A new server that only a reload can bring (an unanswered name, a static algorithm, an option
    `add server` refuses) is no capacity yet: when nothing else would serve, nothing is
    taken away either, and the servers that leave go with the reload (which may wait for
    ``restart_interval``, a backoff or a refused candidate: HAProxy's retries and
    redispatch cover a dead one meanwhile, an empty backend answers 503 to all)."""
    name = backend.name
    first_op = len(ops)
    waiting = False  # a new server that only a reload can bring
    lowered: list[Op] = []  # weights lowered (raises go first)
    leaving: list[Op] = []  # out of the balancing: after everything else
    # 1. servers HAProxy has: address, weight, state
    for server_name, spec in backend.servers.items():
        server = current.get(server_name)
        if server is None:
            continue
        if _same_address(spec, server) is False:
            if spec.answer or is_ip(spec.host):  # (a name: at synapse's answer)
                ops.append(SetAddr(name, server_name, spec.answer or spec.host, spec.port))
            else:
                reasons.append(("server_options", f"address of {name}/{server_name} changed"))
        held = capabilities.held_checks  # (an add cut before its `enable health`; not a panic's)
        if spec.check and server.check_disabled and f"{name}/{server_name}" not in held:
            ops.append(EnableHealth(name, server_name))  # before a weight or ready serves it
        back = not spec.disabled and (server.forced_maint or server.forced_drain)
        if server.weight != spec.weight:
            if not backend.dynamic:
                reasons.append(
                    ("weight", f"weight of {name}/{server_name} with balance {backend.balance}")
                )
                waiting = waiting or spec.weight > server.weight
            elif back or spec.weight > server.weight:  # (one back: before its ready)
                ops.append(SetWeight(name, server_name, spec.weight))
            else:
                (leaving if spec.weight == 0 else lowered).append(
                    SetWeight(name, server_name, spec.weight)
                )
        if spec.disabled:  # `disabled` in its options: kept in maintenance
            if not server.forced_maint:
                leaving.append(SetState(name, server_name, "maint"))
        elif back:
            ops.append(SetState(name, server_name, "ready"))
    # 2. servers HAProxy does not have
    for server_name, spec in backend.servers.items():
        if server_name in current:
            continue
        why_not = _why_not_addable(backend, spec, capabilities)
        if why_not:
            reasons.append(("new_server", f"new server {name}/{server_name}: {why_not}"))
            waiting = waiting or not spec.disabled
            continue
        ops.append(AddServer(name, server_name, spec.add_address, spec.add_options))
        if spec.check:
            ops.append(EnableHealth(name, server_name))
        if not spec.disabled:  # an added server starts in maintenance
            ops.append(SetState(name, server_name, "ready"))
    ops += lowered
    if waiting and not _serving_after(backend, current, ops[first_op:]):
        return  # nothing would serve until the reload: what goes, goes with it
    ops += leaving
    # 3. servers that left stop taking traffic, once the others took it over
    left = []
    for server_name, server in sorted(current.items()):
        if server_name in backend.servers or server_name in backend.static_servers:
            continue
        left.append(server)
        if not server.forced_maint:
            ops.append(SetState(name, server_name, "maint"))
        if capabilities.remove_servers == "delete":
            ops.append(DelServer(name, server_name))
    ops += [DelLeftover(name, old) for old in old_leftovers(backend, left, capabilities)]


def _serving_after(
    backend: BackendSpec, current: Mapping[str, RunningServer], ops: list[Op]
) -> bool:
    """Whether a server of ``backend`` takes traffic once ``ops`` (what comes, before
    anything goes) ran: one HAProxy has that stays (wanted, not disabled, its weight then
    above 0, not left in maint or drain) or one added and made ready."""
    if any(name in current for name in backend.static_servers):
        return True  # (the service's own `server` lines)
    readied = {op.server for op in ops if isinstance(op, SetState) and op.state == "ready"}
    weights = {op.server: op.weight for op in ops if isinstance(op, SetWeight)}
    for server_name, spec in backend.servers.items():
        server = current.get(server_name)
        if server is None:
            if server_name in readied:
                return True
            continue
        held = (server.forced_maint or server.forced_drain) and server_name not in readied
        if not spec.disabled and weights.get(server_name, server.weight) > 0 and not held:
            return True
    return False


def _why_not_addable(backend: BackendSpec, spec: ServerSpec, capabilities: Capabilities) -> str:
    if not capabilities.can_add_servers:
        version = ".".join(map(str, capabilities.version or ())) or "unknown"
        return f"HAProxy {version} cannot add servers at runtime (2.4 can)"
    if not backend.dynamic:
        return f"balance {backend.balance} does not accept added servers"
    return spec.why_not_addable
