"""Rendering: (HAProxyConfig, desired services) -> the HAProxy config, and what the planner needs.

Airbnb synapse's layout (``templates/haproxy.cfg.j2``, written without jinja2 by
``default_layout``; or the operator's ``haproxy.template``, with jinja2): ``global``,
``defaults``, ``extra_sections``, then per service a frontend (when the service has a
``port`` key) and a backend, then the ``shared_frontend``. ``listen`` lines are sorted
into the frontend and/or the backend by keyword (``synapse.haproxy.keywords``). Each
backend and server also gets a spec (``synapse.haproxy.specs``): what the runtime API
may do to it.

Rendering is incremental. The default template wraps each service in a ``service``
block (and the rest in ``head`` and ``tail``), so each service is rendered and parsed on
its own, and kept until its inputs change: its DesiredService object, and the server
ids HAProxy uses in its backend. When the list of services is the same as last time
except for some of them, the new config is the previous one with those pieces
replaced, and it says so (``DesiredConfig.delta``): the planner then compares only
those. A thousand services cost one service's work when one changed. A template
without those blocks (or whose blocks do not add up to the whole) is rendered whole
every time: correct, only slower.

Apart from that cache rendering is pure (but for ``kept_binds``: a bind widened to a
wildcard looks at the config file and the listening sockets): the template is read once,
when the Renderer is built. jinja2 is imported only for an operator's template.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from synapse.config import HAProxyConfig, ServiceConfig, ServiceHAProxyConfig
from synapse.haproxy import default_layout, edge, server_wait, zone_lines, zone_map
from synapse.haproxy.configtext import ParsedConfig, assemble, parse_blocks, parse_config
from synapse.haproxy.desired import Delta, DesiredConfig
from synapse.haproxy.kept_binds import SHARED_SECTION, KeptBinds
from synapse.haproxy.keywords import sort_lines
from synapse.haproxy.pieces import EarlySpec, Frame, Rendered, ServicePiece, early_fits
from synapse.haproxy.resilience import extra_backend_lines
from synapse.haproxy.settings import (
    Settings,
    http_frontend_extras,
    managed_global,
    settings_for,
)
from synapse.haproxy.specs import BackendBase, BackendBuilder, BackendSpec, same_runtime_options
from synapse.haproxy.stats_page import stats_sections
from synapse.haproxy.template_file import load_template
from synapse.identity import moved
from synapse.model import DesiredService

if TYPE_CHECKING:
    from synapse.haproxy.jinja_layout import JinjaLayout

NO_CONTEXT: dict[str, Any] = {}  # a default layout's piece: see Renderer._piece


class _ConfigParts(NamedTuple):
    frontend: list[str]
    backend_lines: list[str]
    warnings: tuple[str, ...]
    base: BackendBase


class Renderer:
    """Renders candidate configs for one ``haproxy`` config block."""

    def __init__(
        self,
        config: HAProxyConfig,
        settings: Settings | None = None,
        template_text: str | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or settings_for(config)
        self._defaults = defaults = list(config.defaults) + list(self.settings.extra_defaults)
        self._builder = BackendBuilder(defaults, config.max_server_id, config.server_order_seed)
        self._pieces: dict[str, ServicePiece] = {}
        self._by_config: dict[str, tuple[ServiceConfig, _ConfigParts]] = {}
        self._last: Rendered | None = None
        # service -> (its DesiredService, ids, spec, warnings) from membership_specs(): the
        # render that follows takes them instead of building them again.
        self._early: dict[str, EarlySpec] = {}
        self._head: Frame | None = None
        self._tails: dict[tuple[str, ...] | None, Frame] = {}
        self.rendered_pieces = 0  # services rendered (not taken from the cache): for tests
        # What render() raises on a broken template or an unreadable file.
        self.errors: tuple[type[Exception], ...] = (OSError,)
        self._wait_lua = server_wait.prepare(config, self.settings)  # None: nothing waits
        self._jinja: JinjaLayout | None = None  # None: the default layout, without jinja2
        if template_text is not None or config.template:
            from synapse.haproxy import jinja_layout  # (jinja2: ~2 MB, only when used)

            text = template_text or load_template(config)
            self._jinja = jinja_layout.JinjaLayout(text, self._frame_vars(("bind 127.0.0.1:2",)))
            self.errors = jinja_layout.ERRORS
        self.composable = self._jinja is None or self._jinja.composable
        path = self.settings.config_path
        self._zone_map = zone_map.map_path(path) if path is not None else None
        self.kept_binds = KeptBinds(path)  # (an address a wider one replaces, while it listens)

    @property
    def shared_frontend_enabled(self) -> bool:
        return bool(self.config.shared_frontend) or "shared_frontend" in (
            self.config.model_fields_set
        )

    def render(
        self,
        services: list[DesiredService],
        running_ids: Mapping[str, Mapping[str, int]] | None = None,
        changed_ids: Collection[str] | None = None,
    ) -> DesiredConfig:
        """Render ``services``; ``running_ids`` (backend -> server -> id) keeps HAProxy's ids.

        ``changed_ids``: the backends whose running ids may differ from the last render's
        (None: any). Only services whose DesiredService or ids changed are rendered again;
        the rest come from the cache. With ``changed_ids`` and the same list of services
        otherwise, the result is the last config with those pieces replaced, and its
        ``delta`` says where it differs from the last config.
        """
        running_ids = running_ids or {}
        last = self._last
        same_list = last is not None and len(services) == len(last.services)
        if self.composable and same_list and changed_ids is not None:
            assert last is not None
            patched = self._render_changes(services, running_ids, changed_ids, last)
            if patched is not None:
                return patched
        return self._render_all(services, running_ids)

    def changed_backends(self, services: list[DesiredService]) -> set[str] | None:
        """The backends of the services that differ from the last render's (None: the
        list changed shape, or the template renders whole: every service may change)."""
        last = self._last
        if last is None or not self.composable or len(services) != len(last.services):
            return None
        changed = set()
        for i in moved(services, last.services):
            changed.add(services[i].backend_name)
            changed.add(last.services[i].backend_name)
        return changed

    @property
    def last_parsed(self) -> ParsedConfig | None:
        """The last rendered config's parse (the file holds that render when it is it)."""
        return self._last.config.parsed if self._last is not None else None

    def membership_specs(
        self,
        services: list[DesiredService],
        running_ids: Mapping[str, Mapping[str, int]],
        since: list[DesiredService] | None = None,
    ) -> list[BackendSpec] | None:
        """The new backend specs of the services that changed since the last render, when
        each changed only in its servers (same config object, the default layout, server
        lines that differ in no option the runtime API cannot set); None when anything
        else may have changed (render and plan it all). Built once: the next render's
        pieces take them (``_piece``). The express path plans commands from them.

        ``since``: the services of the last apply, whose render is owed (``owed``): only
        those changed since are looked at; the others keep what was built for them."""
        last, built, self._early = self._last, self._early, {}
        if last is None or self._jinja is not None or len(services) != len(last.services):
            return None
        positions = moved(services, last.services)
        if since is not None and len(since) == len(services):
            self._early, positions = built, moved(services, since)  # (a window's worth)
        specs = []
        for i in positions:
            service, old = services[i], last.pieces[i]
            ids = running_ids.get(service.backend_name) or {}
            early = built.get(service.name)  # (built earlier, its render still owed)
            if early is not None and early_fits(early, service, ids):
                self._early[service.name] = (service, ids, early[2], early[3])  # (next: `is`)
                specs.append(early[2])
                continue
            hap, routing = service.config.haproxy, service.config.zone_routing
            if old is None or hap.disabled or old.service.config is not service.config:
                return None
            if service.name != old.service.name or (routing is not None and routing.signals):
                return None  # (zone signals: the frontend's lines follow the servers)
            _, backend_lines, line_warnings, base = self._config_parts(service)
            warnings = list(line_warnings)
            previous = (old.service, old.backend)
            spec = self._builder.backend(service, backend_lines, ids, warnings, base, previous)
            if tuple(warnings) != old.warnings or not same_runtime_options(old.backend, spec):
                return None
            self._early[service.name] = (service, ids, spec, warnings)
            specs.append(spec)
        return specs

    def _render_all(
        self, services: list[DesiredService], running_ids: Mapping[str, Mapping[str, int]]
    ) -> DesiredConfig:
        pieces: list[ServicePiece | None] = []
        kept: dict[str, ServicePiece] = {}
        for service in services:
            if service.config.haproxy.disabled:
                pieces.append(None)
                continue
            ids = running_ids.get(service.backend_name) or {}
            piece = self._pieces.get(service.name)
            if piece is None or not piece.fits(service, ids):
                piece = self._piece(service, ids)
            kept[service.name] = piece
            pieces.append(piece)
        self._pieces = kept
        self._by_config = {n: v for n, v in self._by_config.items() if n in kept}
        self.kept_binds.retain(f"frontend {name}" for name in kept)  # (sections that left)
        config = self._assemble(pieces)
        positions = {p.backend.name: i for i, p in enumerate(pieces) if p is not None}
        self._last = Rendered(list(services), pieces, config, positions)
        return config

    def _render_changes(
        self,
        services: list[DesiredService],
        running_ids: Mapping[str, Mapping[str, int]],
        changed_ids: Collection[str],
        last: Rendered,
    ) -> DesiredConfig | None:
        """The last config with the changed services' pieces replaced; None when the change
        is more than that (a service added, removed, enabled, renamed, a section more...)."""
        positions = set(moved(services, last.services))
        positions.update(last.positions[b] for b in changed_ids if b in last.positions)
        changes: list[tuple[int, ServicePiece, ServicePiece]] = []
        for i in sorted(positions):
            service, old = services[i], last.pieces[i]
            if old is None or service.config.haproxy.disabled or service.name != old.service.name:
                return None
            ids = running_ids.get(service.backend_name) or {}
            new = old if old.fits(service, ids) else self._piece(service, ids)
            self._pieces[service.name] = new  # (reused by a whole render, if it comes to that)
            if not self.composable or not new.same_shape(old):
                return None
            if new is not old:
                changes.append((i, old, new))
        config = self._patch(last.config, changes)
        if config is None:
            return None
        pieces = list(last.pieces)
        for i, _, new in changes:
            pieces[i] = new
        self._last = Rendered(list(services), pieces, config, last.positions)
        return config

    @staticmethod
    def _patch(
        base: DesiredConfig, changes: list[tuple[int, ServicePiece, ServicePiece]]
    ) -> DesiredConfig | None:
        """``base`` with pieces replaced by same-shaped ones; None if a section or proxy of
        an old piece is shared with another one (a duplicate name: parse it all again)."""
        sections, servers = dict(base.parsed.sections), dict(base.parsed.servers)
        backends, parts = dict(base.backends), list(base.parts)
        headers: set[str] = set()
        proxies: set[str] = set()
        for i, old, new in changes:
            for before, after in zip(old.blocks, new.blocks, strict=True):
                if sections.get(before.header) is not before.lines:
                    return None
                if before.lines != after.lines:
                    headers.add(before.header)
                sections[before.header] = after.lines  # the piece's own: checked next time
                if before.proxy is not None:
                    if servers.get(before.proxy) is not (before.servers or None):
                        return None
                    if after.servers:
                        servers[before.proxy] = after.servers
                    else:
                        servers.pop(before.proxy, None)
                    proxies.add(before.proxy)
            if backends.get(old.backend.name) is not old.backend:
                return None
            backends[old.backend.name] = new.backend
            parts[i + 1] = new.text
        delta = Delta(
            base.parsed,
            frozenset(headers),
            frozenset(proxies),
            frozenset(old.backend.name for _, old, _ in changes),
        )
        parsed = base.parsed.patched(sections, servers)
        return DesiredConfig(parsed, backends, base.warnings, tuple(parts), delta)

    # --- pieces ------------------------------------------------------------------------

    def _config_parts(self, service: DesiredService) -> _ConfigParts:
        """What the service's config alone decides, once per ServiceConfig object: a
        change of servers (the common change) renders only the servers again."""
        cached = self._by_config.get(service.name)
        if cached is not None and cached[0] is service.config:
            return cached[1]
        hap = service.config.haproxy
        warnings: list[str] = []
        frontend, backend_lines = sort_lines(service.name, hap, warnings)
        # (the extras before the log lines: seeding finds the log lines last, as it renders
        # them, and reads the extras back as the operator's own)
        frontend += http_frontend_extras(self.settings, frontend, self._defaults)
        frontend = edge.service_frontend_lines(self.config, frontend)
        if hap.has_frontend:  # (cached with the config: read once per change of it)
            new = [*frontend, f"bind {self._bind(hap)}"]
            frontend += self.kept_binds.lines(f"frontend {service.name}", new)
        backend_lines = edge.backend_lines(hap, backend_lines)
        backend_lines += extra_backend_lines(self.config, service.config, backend_lines)
        if self._wait_lua is not None:  # first: it decides before any other rule runs
            backend_lines = server_wait.first(self.config, service.config, backend_lines,
                                              self._defaults) + backend_lines  # fmt: skip
        base = self._builder.base(backend_lines)
        parts = _ConfigParts(frontend, backend_lines, tuple(warnings), base)
        self._by_config[service.name] = (service.config, parts)
        return parts

    def _piece(self, service: DesiredService, ids: Mapping[str, int]) -> ServicePiece:
        self.rendered_pieces += 1
        hap = service.config.haproxy
        frontend, backend_lines, line_warnings, base = self._config_parts(service)
        # Not cached with the config: the zones a service routes to come from its records.
        frontend = frontend + zone_lines.frontend_lines(
            service, self._zone_map, self._address(hap), lambda a: self._bind(hap, a)
        )
        early = self._early.pop(service.name, None)
        if early is not None and early_fits(early, service, ids):
            spec, warnings = early[2], list(early[3])  # (membership_specs built it)
        else:
            warnings = list(line_warnings)
            old = self._pieces.get(service.name)
            previous = (old.service, old.backend) if old is not None else None
            spec = self._builder.backend(service, backend_lines, ids, warnings, base, previous)
        shared = tuple(hap.shared_frontend)
        if shared and not self.shared_frontend_enabled:
            warnings.append(
                f"service {service.name} has shared_frontend lines but haproxy has no "
                "shared_frontend: skipped"
            )
            shared = ()
        context = {
            "name": service.name,
            "frontend": frontend if hap.has_frontend else None,
            "bind": self._bind(hap),
            "backend_name": spec.name,
            "backend": backend_lines,
            "servers": list(spec.servers.values()),
        }
        routed = bool(hap.routes) and self.shared_frontend_enabled
        # The ids copied: a view of the running servers (``view.ServerIds``) would keep
        # HAProxy's server map of that moment alive as long as the piece.
        kept_ids = ids if not ids or type(ids) is dict else dict(ids)
        fields = (service, kept_ids, context, spec, tuple(warnings), shared, routed)
        if self._jinja is None:  # the default layout: its blocks when first asked for
            text, blocks = default_layout.service_lazily(context)
            # Always composable: the context is never asked for again, and is not kept
            # (its list of the servers' specs and the frontend lines: ~0.5 MB at 1,000).
            return ServicePiece(service, kept_ids, NO_CONTEXT, *fields[3:], text, blocks)
        piece = ServicePiece(*fields)
        if not self.composable:
            return piece
        text = self._jinja.block("service", service=context)
        blocks = tuple(parse_blocks(text))
        if blocks and blocks[0].header == "":
            # Lines before the piece's first header would belong to the previous piece's
            # last section in the whole text: this template cannot be rendered in pieces.
            self.composable = False
            return piece
        return replace(piece, text=text, made=blocks)

    def _assemble(self, aligned: list[ServicePiece | None]) -> DesiredConfig:
        """The whole config from the services' pieces (None: disabled). Its parts are the
        head, one per service ("" when disabled), and the tail."""
        pieces = [piece for piece in aligned if piece is not None]
        warnings = tuple(w for piece in pieces for w in piece.warnings)
        backends = {piece.backend.name: piece.backend for piece in pieces}
        shared: tuple[str, ...] | None = None
        if self.shared_frontend_enabled:
            lines = [*self.config.shared_frontend, *(ln for p in pieces for ln in p.shared)]
            routed = any(piece.routed for piece in pieces)
            shared = (*edge.shared_frontend_lines(self.config, lines, routed),
                      *http_frontend_extras(self.settings, lines, self._defaults))  # fmt: skip
            shared += tuple(self.kept_binds.lines(SHARED_SECTION, shared))
        if self.composable:
            head, tail = self._frame_head(), self._frame_tail(shared)
            parts = (head.text, *(p.text if p else "" for p in aligned), tail.text)

            def parse() -> ParsedConfig:  # (on first use: DesiredConfig.parsed)
                return assemble(
                    itertools.chain(head.blocks, *(p.blocks for p in pieces), tail.blocks)
                )

            return DesiredConfig(parse, backends, warnings, parts)
        assert self._jinja is not None  # (the default layout is composable)
        text = self._jinja.whole(
            **self._frame_vars(shared), services=[piece.context for piece in pieces]
        )
        return DesiredConfig(parse_config(text), backends, warnings, (text,))

    def _frame_vars(self, shared: tuple[str, ...] | None) -> dict[str, Any]:
        return {
            "global_lines": list(self.settings.first_global)
            + (managed_global(self.config) if self.settings.managed else list(self.config.global_))
            + list(self.settings.extra_global)
            + edge.global_lines(self.config)
            + server_wait.global_lines(self._wait_lua),
            "defaults_lines": self._builder.defaults,
            "extra_sections": [
                {"title": title, "lines": lines}
                for title, lines in self.config.extra_sections.items()
            ]
            + stats_sections(self.config),
            "shared_frontend": None if shared is None else list(shared),
        }

    def _frame_head(self) -> Frame:
        if self._head is None:
            frame = self._frame_vars(None)
            text = self._jinja.block("head", **frame) if self._jinja else self._head_text(frame)
            self._head = Frame(text, tuple(parse_blocks(text)))
        return self._head

    def _frame_tail(self, shared: tuple[str, ...] | None) -> Frame:
        tail = self._tails.get(shared)
        if tail is None:
            frame = self._frame_vars(shared)
            text = self._jinja.block("tail", **frame) if self._jinja else self._tail_text(frame)
            tail = Frame(text, tuple(parse_blocks(text)))
            self._tails = {shared: tail}  # only the latest: the lines rarely change
        return tail

    @staticmethod
    def _head_text(frame: dict[str, Any]) -> str:
        return default_layout.head(
            frame["global_lines"], frame["defaults_lines"], frame["extra_sections"]
        )

    @staticmethod
    def _tail_text(frame: dict[str, Any]) -> str:
        return default_layout.tail(frame["shared_frontend"])

    def _address(self, hap: ServiceHAProxyConfig) -> str:
        return hap.bind_address or self.config.bind_address

    def _bind(self, hap: ServiceHAProxyConfig, address: str | None = None) -> str:
        address = address or self._address(hap)
        bind = address if hap.port is None else f"{address}:{hap.port}"
        bind = f"{bind} {hap.bind_options}" if hap.bind_options else bind
        return edge.bind(bind, hap.accept_proxy)
