"""Routes (edge) kept in step at runtime: the map files on disk and HAProxy's maps in memory.

``synapse.haproxy.routes`` compiles the services' ``haproxy.routes`` into three maps; the
shared frontend's lines do not depend on their entries. So a host or path added or
removed on SIGHUP is a map change, never a reload: ``sync`` sends the difference between
what HAProxy holds (``show map``, read again after every start or reload) and what is
wanted as ``add map`` / ``set map`` / ``del map`` commands, in one batch per admin socket
(``synapse.haproxy.executor``), then rewrites the map files so that a later reload or
restart starts from the same routes.

An entry is sent only when its backend exists in the running HAProxy: a brand-new
service's routes reach HAProxy with the reload that creates its backend (the map files
are written with every wanted entry just before HAProxy reads the config:
``write_wanted``; and put back to what runs when that config is refused: ``restore``).

A key that moves to another service (a host moved, a service renamed or split) keeps the
backend HAProxy routes it to now while the new one cannot serve (``held``): at runtime
until the reload creates the new backend (removing the entry would answer 404 until
then) and until HAProxy has a server there that takes requests (asked with `show servers
state` after the apply's commands: a server only a reload brings, static-rr or a DNS
name, is in the desired state a while before HAProxy has it; its empty backend would
answer 503), and in the files until the new service has servers (a reload brings those;
its watcher may answer after the reload). A held key follows the next apply after.

After a runtime change the files are rewritten to match; a write that fails there (a
full or read-only disk) fails neither the apply nor anyone else's change (HAProxy
already serves it): ``MapFiles`` says it once per streak, counts it and the next apply
writes again. Before HAProxy reads them (``write_wanted``) a failure raises: the reload
waits, retried (``installer.InstallFailed``, ``disk``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from smartstack.logs import event
from synapse.haproxy import routes
from synapse.haproxy.executor import run_ops
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op
from synapse.haproxy.routes import RouteCollision, RouteMaps, RouteSpec
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError
from synapse.identity import moved, same_objects
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")

UNKNOWN_MAP = "unknown map identifier"
HELD_RUNNING = "the new backend is not running yet or has no server taking requests yet"
HELD_FILES = "the new service has no servers yet"
OWED = "HAProxy serves the change; the next apply writes the file again (a reload waits for it)"


@dataclass(frozen=True)
class MapOp(Op):
    """One map entry command; ``backend`` holds the map kind and ``server`` the key."""

    line: str = ""
    kind: ClassVar[str] = "map"

    @property
    def label(self) -> str:
        return f"map_{self.line.split()[0]}"  # map_add, map_set, map_del

    @property
    def command(self) -> str:
        return self.line


class MapFiles:
    """The files of one kind of map (``zones``, ``routes``) after HAProxy's map changed at
    runtime: a write that fails is said once per streak (``haproxy_map_file_write_failed``,
    then ``haproxy_map_file_written``), counted, and owed until a later one succeeds."""

    def __init__(self, kind: str, metrics: HAProxyMetrics) -> None:
        self.kind, self.metrics = kind, metrics
        self.failures = 0  # failed writes in a row: while above 0 the files are owed
        self._since = 0.0

    def write(self, write: Callable[[], None]) -> bool:
        """``write()`` with its OSError reported, not raised; False: the files are owed."""
        try:
            write()
        except OSError as err:
            self.metrics.map_file_errors.labels(self.kind).inc()
            if not self.failures:
                self._since = time.monotonic()
                event(log, "haproxy_map_file_write_failed", level=logging.WARNING,
                      map=self.kind, error=str(err)[:300], detail=OWED)  # fmt: skip
            self.failures += 1
            return False
        if self.failures:
            event(log, "haproxy_map_file_written", map=self.kind, failures=self.failures,
                  seconds=round(time.monotonic() - self._since, 1))  # fmt: skip
        self.failures = 0
        return True


def parse_show_map(answer: str) -> dict[str, str] | None:
    """``show map <file>`` -> key -> value; None when HAProxy has no such map."""
    if UNKNOWN_MAP in answer.lower():
        return None
    entries = {}
    for line in answer.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("0x"):
            entries[fields[1]] = fields[2]
    return entries


def restrict(maps: RouteMaps, backends: Collection[str]) -> RouteMaps:
    """The entries of ``maps`` whose backend is in ``backends``."""
    kept = {
        kind: {key: value for key, value in entries.items() if value in backends}
        for kind, entries in maps.by_kind().items()
    }
    return RouteMaps(**kept)


def held(
    target: RouteMaps, wanted: RouteMaps, current: RouteMaps, keep: Callable[[str, str], bool]
) -> tuple[RouteMaps, list[str]]:
    """``target``, except the keys of ``wanted`` that ``current`` routes to another backend
    and ``keep(current backend, wanted backend)`` holds: those keep their current backend.
    (the maps, the keys held). Only kinds whose entries differ are looked at."""
    out: dict[str, Mapping[str, str]] = {}
    keys: list[str] = []
    now, want = current.by_kind(), wanted.by_kind()
    for kind, entries in target.by_kind().items():
        before, kept = now[kind], None
        if entries != before:
            for key in want[kind].keys() & before.keys():
                old, new = before[key], want[kind][key]
                if old != new and entries.get(key) != old and keep(old, new):
                    kept = kept if kept is not None else dict(entries)
                    kept[key] = old
                    keys.append(key)
        out[kind] = entries if kept is None else kept
    return (RouteMaps(**out) if keys else target), sorted(keys)


class RouteSync:
    """The map files and HAProxy's maps of one controller (see the module docstring)."""

    def __init__(self, runtime: Sequence[RuntimeClient], metrics: HAProxyMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.paths: dict[str, Path] | None = None
        self.wanted = RouteMaps()
        self.served: RouteMaps | None = None  # what HAProxy holds; None: read it again
        # HAProxy's config has no maps (no routes when it started): nothing to read or send
        # until it starts or reloads again, instead of a `show map` per apply.
        self._no_maps = False
        self._inputs: list[DesiredService] = []
        self._specs: dict[str, tuple[DesiredService, RouteSpec | None]] = {}
        self._written: RouteMaps | None = None  # what the files hold (None: unknown)
        self._files = MapFiles("routes", metrics)  # (a failed write: owed, not raised)
        self._read: RouteMaps | None = None  # the files as HAProxy last read them
        self.loaded: RouteMaps | None = None  # ... as the running HAProxy did (None: unknown)
        self._held: dict[str, list[str]] = {}  # per reason: the keys ``held``, as last logged
        # backend -> the enabled services that have it (None: build it again), so a held
        # key costs a look at its two backends' services per apply, not at every service
        self._by_backend: dict[str, list[str]] | None = None

    def configure(self, config_path: Path | None) -> None:
        paths = routes.map_paths(config_path) if config_path is not None else None
        if paths != self.paths:
            self.paths, self._written = paths, None

    def want(self, desired: list[DesiredService]) -> None:
        """The maps of ``desired`` (compiled again only when a service object changed)."""
        if same_objects(desired, self._inputs):
            return
        if self._same_routes(desired):
            self._inputs = list(desired)
            return
        specs: dict[str, tuple[DesiredService, RouteSpec | None]] = {}
        for service in desired:  # a service object seen last time: its spec as it was
            kept = self._specs.get(service.name)
            if kept is None or kept[0] is not service:
                kept = (service, routes.route_spec(service))
            specs[service.name] = kept
        try:
            routed = {name: spec for name, (_, spec) in specs.items() if spec is not None}
            self.wanted = routes.compile_routes(routed)
        except (RouteCollision, ValueError) as err:  # config loading refuses these first
            event(log, "haproxy_routes_refused", level=logging.ERROR, error=str(err),
                  detail="the previous routes stay")  # fmt: skip
        self._inputs, self._specs, self._by_backend = list(desired), specs, None

    def _same_routes(self, desired: list[DesiredService]) -> bool:
        """Whether only services whose routes stay as they were changed (the usual change:
        servers): then the maps stay, without a loop over every service per apply."""
        if len(desired) != len(self._inputs):
            return False
        for i in moved(desired, self._inputs):
            service, kept = desired[i], self._specs.get(desired[i].name)
            if kept is None or self._inputs[i].name != service.name:
                return False
            spec = routes.route_spec(service)
            if spec != kept[1]:
                return False
            if _owner(service) != _owner(kept[0]):  # (a service without routes)
                self._by_backend = None
            self._specs[service.name] = (service, spec)
        return True

    def invalidate(self) -> None:
        """HAProxy (re)started: it read the map files; ask it what it holds next time."""
        self.served = None
        self._no_maps = False
        self.loaded = self._read

    # --- files ------------------------------------------------------------------------

    def _write(self, maps: RouteMaps) -> None:
        if self.paths is None or maps == self._written:
            return
        known, self._written = self._written, None  # (unknown until done: a failure midway)
        routes.write_map_files(maps, self.paths, known)
        self._written = maps

    def _save(self, maps: RouteMaps) -> None:
        """The files to match HAProxy's maps; a failure is said, never raised (owed)."""
        self._files.write(lambda: self._write(maps))

    def _staffed(self, backend: str) -> bool | None:
        """Whether the enabled services of ``backend`` have servers in the desired state
        (None: no enabled service has that backend)."""
        if self._by_backend is None:
            self._by_backend = {}
            for name, (service, _) in self._specs.items():
                if (backend_name := _owner(service)) is not None:
                    self._by_backend.setdefault(backend_name, []).append(name)
        names = self._by_backend.get(backend)
        return None if names is None else any(self._specs[n][0].servers for n in names)

    def _for_files(self) -> RouteMaps:
        """What a reload should read: every wanted entry, except a key moving from a
        backend with servers to one without (its watcher has not answered yet)."""
        current = self.served if self.served is not None else self.loaded
        if current is None or current == self.wanted:
            self._held.pop(HELD_FILES, None)
            return self.wanted
        maps, keys = held(
            self.wanted,
            self.wanted,
            current,
            lambda old, new: self._staffed(old) is True and self._staffed(new) is False,
        )
        self._log_held(keys, HELD_FILES)
        return maps

    def _log_held(self, keys: list[str], why: str) -> None:
        """Logged when the keys held change (not at every apply while they wait)."""
        if keys and keys != self._held.get(why):
            event(log, "haproxy_routes_held", count=len(keys), first=keys[0], reason=why)
        self._held[why] = keys

    def write_wanted(self) -> None:
        """Before HAProxy reads a config (``haproxy -c``, start, reload): every entry
        (a moving key whose new service has no servers yet: as it is; ``held``)."""
        maps = self._for_files()
        self._write(maps)
        self._read = maps

    def restore(self) -> None:
        """The candidate was refused: the files say again what HAProxy holds."""
        if self.served is not None:
            self._save(self.served)

    # --- runtime ----------------------------------------------------------------------

    async def _read_served(self) -> RouteMaps | None:
        """What HAProxy's maps hold (first admin socket); None: no maps or no answer."""
        assert self.paths is not None
        found: dict[str, dict[str, str]] = {}
        try:
            for kind, path in self.paths.items():
                entries = parse_show_map(await self.runtime[0].execute(f"show map {path}"))
                if entries is None:
                    self._no_maps = True  # no route lines in the running config: a reload adds them
                    return None
                found[kind] = entries
        except HAProxySocketError:
            return None
        return RouteMaps(**found)

    async def _runtime_target(self, backends: Collection[str]) -> RouteMaps:
        """The wanted entries of running backends; a moving key whose new backend is not
        running yet or has no server taking requests in HAProxy stays on a running backend
        whose service has servers (``held``)."""
        assert self.served is not None
        target = restrict(self.wanted, backends)
        if target == self.served:
            self._held.pop(HELD_RUNNING, None)
            return target
        ask: set[str] = set()  # new backends with servers in the desired state: HAProxy's?
        ready: Collection[str] = ()

        def keep(old: str, new: str) -> bool:
            if old not in backends or self._staffed(old) is False:
                return False  # (a stale entry, or one that serves nothing either)
            if new not in backends or not self._staffed(new):
                return True
            ask.add(new)
            return new not in ready

        maps, keys = held(target, self.wanted, self.served, keep)
        if ask and (ready := await self._taking_requests(ask)):
            maps, keys = held(target, self.wanted, self.served, keep)
        self._log_held(keys, HELD_RUNNING)
        return maps

    async def _taking_requests(self, backends: Collection[str]) -> set[str]:
        """Of ``backends``, those with a server HAProxy sends requests to (not in
        maintenance, weight above 0), as it runs them after the apply's commands: a server
        that only a reload can add is desired well before it is there (rate limit)."""
        try:
            _, found = await self.runtime[0].read_state(sorted(backends), with_pid=False)
        except HAProxySocketError:
            return set()  # (held: the old backend serves, the next apply asks again)
        return {
            name
            for name, servers in found.items()
            if any(not s.in_maint and s.weight > 0 for s in (servers or {}).values())
        }

    async def sync(self, backends: Collection[str]) -> tuple[list[str], list[str]]:
        """Send HAProxy the wanted entries of ``backends`` (the running ones) and remove the
        rest; write the files to match. (commands applied, failures needing a reload)."""
        if self.paths is None:
            return [], []
        if not self.runtime:  # no runtime API: a reload must read the files
            maps = self._for_files()
            if maps == (self.loaded or RouteMaps()):
                return [], []
            self._save(maps)  # (else the reload writes them, or waits for the disk)
            return [], ["routes changed and there is no runtime API: a reload loads the maps"]
        if self.served is None:
            if self._no_maps:
                return [], []
            self.served = await self._read_served()
            if self.served is None:
                return [], []
        target = await self._runtime_target(backends)
        lines = routes.runtime_commands(self.served, target, self.paths)
        if not lines:
            self._save(self.served)  # (files owed by an earlier apply: written now)
            return [], []
        ops = [MapOp(line.split()[2], line.split()[3], line) for line in lines]
        applied, failures = await run_ops(self.runtime, ops, self.metrics)
        if failures:
            maps = self._for_files()
            self.served = None  # read again; the reload that follows loads the files
            self._save(maps)
            return applied, failures
        self.served = target
        # Off the event loop (fsync): the route already works, a SIGHUP may be waiting.
        await asyncio.to_thread(self._save, target)
        event(log, "haproxy_routes_changed", commands=len(applied), first=applied[0])
        return applied, failures


def _owner(service: DesiredService) -> str | None:
    """The backend ``service`` serves requests in (None: disabled)."""
    return None if service.config.haproxy.disabled else service.backend_name
