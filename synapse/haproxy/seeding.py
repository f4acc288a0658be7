"""A last good block for per-service isolation, read back from the config file HAProxy runs.

``Isolation`` keeps, per service, the last block HAProxy accepted, in memory. A new synapse
process (a restart: a common way to roll out a config) has none, so a service whose new
block ``haproxy -c`` refuses would be left out of HAProxy although HAProxy runs it. When
such a service is isolated, ``seed_block`` reads its running block back from the config
file (synapse's own render, kept equal to what HAProxy runs): its ``frontend <service>``
and ``backend <backend_name>`` sections become a ServiceConfig (the refused one with these
keys replaced) whose render gives those sections again, line for line:

- ``backend``: the running backend's lines as they are, synapse's own additions among them
  (``timeout queue``, retries, health checks: those keys are turned off, so nothing is
  added twice);
- ``frontend``: the running frontend's lines without those the renderer adds itself
  (access-log and zone lines, ``bind``, ``default_backend``); its ``bind`` line gives
  ``bind_address``, ``port`` and ``bind_options``;
- ``shared_frontend``: the refused block's lines that the running shared frontend has;
- server options: the refused block's, or else the running servers' own (when they all
  have the same, but for the ``init-addr`` synapse adds to DNS-named servers, left out
  whatever the servers) if those render the servers HAProxy runs.

The servers stay today's (discovery), as with any last good block. It is kept only when a
render of it gives the running sections exactly and the servers both have the same
options (a DNS name's answer apart: it moves at runtime); otherwise it says why (the
service is then left out, as before). One difference is let through: the render's backend
holds every running line, in order, and a ``timeout queue`` besides (``Seed.added``),
when the running servers show a ``maxconn`` (or records may carry one): what a newer
synapse adds to the same block (the version that wrote the file predates it). Other
added lines come from the refused block's own keys (its new ``zone_routing``'s ``option
allbackups``, its new ``maxconn`` where no running server tells): still a difference.
Refused for that, a service whose block was refused at the first apply after an upgrade
was left out of HAProxy (review s42: 2,801 of 6,307 requests failed, its port closed);
the service now runs its running block plus the new version's line (one reload).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

from smartstack.modelbase import ValidationError
from synapse.config import HAProxyConfig, ServiceConfig
from synapse.haproxy.configtext import ParsedConfig, ServerLine, structural_options
from synapse.haproxy.edge import bind
from synapse.haproxy.hosts import is_ip, without_init_addr
from synapse.haproxy.render import Renderer
from synapse.model import DesiredService
from synapse.resilience_config import HealthCheckConfig

SHARED_FRONTEND = "shared-frontend"  # the default template's name for it
_PROXY_KINDS = ("frontend", "backend", "listen")
# Keys whose lines the renderer adds to the backend: off, the running lines hold them.
_ADDS_NOTHING: dict[str, Any] = {
    "timeout_queue": None,
    "retries": False,
    "observe": None,
    "wait_for_server_ms": 0,
    "health_check": HealthCheckConfig(enabled=False),
}


class Seed(NamedTuple):
    config: ServiceConfig | None  # the running block, to render as the service's last good
    why_not: str  # when config is None: why ("" when HAProxy does not run the service)
    added: tuple[str, ...] = ()  # backend lines its render adds that the running one lacks


def seed_block(service: DesiredService, config: HAProxyConfig, running: ParsedConfig) -> Seed:
    """``service``'s block as the config ``running`` has it, for the ``haproxy`` block
    ``config``: a ServiceConfig (``service``'s refused one, the keys above replaced) that
    renders the running sections, or why there is none."""
    name, backend = service.name, service.backend_name
    backend_lines = running.sections.get(f"backend {backend}")
    if backend_lines is None:
        return Seed(None, "")
    hap = service.config.haproxy
    if any(line.split()[:1] == ["server"] for line in [*hap.backend, *hap.listen]):
        return Seed(None, "its block writes server lines of its own")
    fields: dict[str, Any] = {key: getattr(hap, key) for key in hap.model_fields_set}
    fields.update(_ADDS_NOTHING, disabled=False, listen=[], backend=list(backend_lines))
    fields["shared_frontend"] = _shared_lines(hap.shared_frontend, config, running)
    frontend = running.sections.get(f"frontend {name}")
    if frontend is None:
        fields.pop("port", None)  # (no `port` key: no frontend)
    elif not _bind_keys(frontend, backend, fields):
        return Seed(None, f"its frontend does not end with its bind and default_backend {backend}")
    try:
        renderer = Renderer(config)  # (its own: the controller's keeps its last render)
    except Exception as err:  # (the operator's template, changed on disk since)
        return Seed(None, f"the template does not load: {err}")
    try:
        if frontend is not None:  # the lines the renderer adds before `bind`: not the user's
            lines = fields["frontend"]
            probe = _render(renderer, service, _made(service, fields))
            added = probe.sections.get(f"frontend {name}", ())[len(lines) : -2]
            if added and tuple(lines[-len(added) :]) != added:
                return Seed(None, "its frontend lacks lines a render of it would have")
            fields["frontend"] = lines[: len(lines) - len(added)]
        blocks = [_made(service, fields)]
        tails = {_own_tail(line) for line in running.servers.get(backend, {}).values()}
        if len(tails) == 1:  # the running servers' own options, if the block's are not
            own = {"server_options": tails.pop() or None, "send_proxy_v2": False,
                   "maxconn": None, "maxqueue": None}  # fmt: skip
            blocks.append(_made(service, {**fields, **own}))
        found: Seed | None = None  # (an exact one before one that adds lines)
        capped = _ran_capped(config, running, backend)
        for block in blocks:
            rendered = _render(renderer, service, block)
            why_not, added = _difference(rendered, running, service, capped)
            if not why_not and not added:
                return Seed(block, "")
            found = found or (Seed(block, "", added) if not why_not else None)
        return found or Seed(None, why_not)
    except (ValidationError, *renderer.errors) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        return Seed(None, f"it does not render: {first[:200]}")


def _own_tail(line: ServerLine) -> str:
    """A running server line's options; a DNS-named server's without the init-addr synapse
    adds (``hosts.added_init_addr``): in the seeded server_options it would be every
    server's, and no server of the service could be added at runtime (init-addr)."""
    host = line.address.rpartition(":")[0].removeprefix("[").removesuffix("]")
    return line.tail if is_ip(host) else without_init_addr(line.tail)


def _bind_keys(frontend: tuple[str, ...], backend: str, fields: dict[str, Any]) -> bool:
    """The bind keys of the frontend's ``bind`` line into ``fields``, and its lines before
    it as ``frontend``; False when it does not end as synapse writes it."""
    if len(frontend) < 2 or frontend[-1] != f"default_backend {backend}":
        return False
    tokens = frontend[-2].split(" ", 2)
    if tokens[0] != "bind" or len(tokens) < 2:
        return False
    address = tokens[1]
    host, colon, port = address.rpartition(":")
    numbered = bool(colon and host) and port.isascii() and port.isdigit()
    numbered = numbered and 1 <= int(port) <= 65535
    fields.update(
        port=int(port) if numbered else None,  # (None: the address is the whole bind)
        bind_address=host if numbered else address,
        bind_options=tokens[2] if len(tokens) > 2 else None,
        accept_proxy=False,  # (`accept-proxy`, if any, is among the options already)
        frontend=list(frontend[:-2]),
    )
    return True


def _shared_lines(lines: list[str], config: HAProxyConfig, running: ParsedConfig) -> list[str]:
    """The service's shared frontend lines that the running shared frontend has (all of
    them when the running config has no shared frontend of synapse's layout)."""
    shared = running.sections.get(f"frontend {SHARED_FRONTEND}")
    if shared is None:
        return list(lines)
    runs = set(shared)
    kept = []
    for line in lines:
        written = " ".join(line.split())
        if written.split()[:1] == ["bind"]:
            written = bind(written, config.accept_proxy)
        if written in runs:
            kept.append(line)
    return kept


def _made(service: DesiredService, fields: dict[str, Any]) -> ServiceConfig:
    # Built, not validated: a daemon on plain models has no pydantic to validate with,
    # and what counts is that the block renders the running sections (``_difference``).
    # (constructed from the given keys alone: an absent `port` is not `port: null`)
    haproxy = type(service.config.haproxy).model_construct(_fields_set=set(fields), **fields)
    return service.config.model_copy(update={"haproxy": haproxy})


def _render(renderer: Renderer, service: DesiredService, block: ServiceConfig) -> ParsedConfig:
    return renderer.render([replace(service, config=block)]).parsed


def _owned(parsed: ParsedConfig, names: set[str]) -> dict[str, tuple[str, ...]]:
    """The sections of the proxies named ``names``."""
    out = {}
    for header, lines in parsed.sections.items():
        tokens = header.split()
        if len(tokens) > 1 and tokens[0] in _PROXY_KINDS and tokens[1] in names:
            out[header] = lines
    return out


def _ran_capped(config: HAProxyConfig, running: ParsedConfig, backend: str) -> bool:
    """Whether HAProxy's running servers of ``backend`` show a ``maxconn`` (their lines or a
    ``default-server`` line), or records may carry one: only then is a ``timeout queue`` a
    render adds the upgrade's, not the refused block's own change (a ``maxconn`` it sets
    where no running server can tell it from the running one)."""
    policy = config.registry_server_options
    if policy.allow and "maxconn" in policy.keywords:
        return True
    lines = [*running.sections.get(f"backend {backend}", ()), *config.defaults]
    tails = [line.tail for line in running.servers.get(backend, {}).values()]
    tails += [line for line in lines if line.split()[:1] == ["default-server"]]
    return any("maxconn" in tail.split() for tail in tails)


def _difference(
    rendered: ParsedConfig, running: ParsedConfig, service: DesiredService, capped: bool
) -> tuple[str, tuple[str, ...]]:
    """Where a render of the block differs from the running config ("": nowhere), and the
    backend lines the render adds to the running ones (see the module docstring; only a
    ``timeout queue`` for servers that ran ``capped``); servers are compared where both
    have them (discovery may have changed them since)."""
    names = {service.name, service.backend_name}
    mine, theirs = _owned(rendered, names), _owned(running, names)
    header = f"backend {service.backend_name}"
    added = _added(mine.get(header, ()), theirs.get(header, ()))
    upgrade = capped and all(line.split()[:2] == ["timeout", "queue"] for line in added)
    if added and upgrade:
        mine[header] = theirs.get(header, ())
    if mine != theirs:
        differ = {h for h in mine.keys() | theirs.keys() if mine.get(h) != theirs.get(h)}
        return f"a render of it differs from the running {', '.join(map(repr, sorted(differ)))}", ()
    before = running.servers.get(service.backend_name, {})
    for server, line in rendered.servers.get(service.backend_name, {}).items():
        old = before.get(server)
        if old is not None and (old.cookie, _options(old)) != (line.cookie, _options(line)):
            return f"its server {server} would run with other options than HAProxy's", ()
    return "", added


def _added(rendered: tuple[str, ...], running: tuple[str, ...]) -> tuple[str, ...]:
    """The lines of ``rendered`` besides ``running``'s when it holds all of those in their
    order (``running`` a subsequence of it); () otherwise, or when it has none besides."""
    extra, lines = [], iter(running)
    wanted = next(lines, None)
    for line in rendered:
        if line == wanted:
            wanted = next(lines, None)
        else:
            extra.append(line)
    return tuple(extra) if wanted is None else ()


def _options(line: ServerLine) -> str:
    """What only a reload changes in a server line: a DNS name's answer (the init-addr
    synapse adds) is not, it moves at runtime (``planner``): an answer that moved since
    the file was written (while synapse was down) left a refused service out."""
    return structural_options(_own_tail(line))
