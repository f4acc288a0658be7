"""Routes as data (edge): each service's hosts and path prefixes -> HAProxy map files.

The shared frontend looks a request up in three maps, in this order (``frontend_lines``):

- ``exact``: key ``<host><path>`` (``shop.example.com/api``), looked up with ``map_beg``
  over ``<request host><request path>``;
- ``wildcard``: key ``.<parent><path>`` for ``*.<parent>``, looked up with the request
  host minus its first label: a wildcard covers exactly one label, as a TLS wildcard
  certificate does (``*.shop.example.com`` matches ``a.shop.example.com``, neither
  ``shop.example.com`` nor ``a.b.shop.example.com``);
- ``paths``: key ``<path>``, looked up over the request path (services with paths only).

A service with hosts only gets the path ``/``: any path. Paths are string prefixes
(HAProxy's ``path_beg``: ``/api`` also matches ``/apix``; write ``/api/`` to avoid it).
HAProxy indexes a ``map_beg`` map (without ``-i``) in a prefix tree, so the longest key
wins whatever the order of the file's lines or of runtime ``add map`` commands: the
longest path prefix wins without us ordering anything. Exact hosts beat wildcards beat
paths-only by the order of the lookups. Hosts are lowercase in the maps; the frontend
lowercases the request's Host header and drops its port; a Host header holding a '/' is
no host (the lookup appends the path to it).

The frontend lines never change with the entries, so adding or removing a host is a
map change (runtime commands plus the files on disk), never a reload.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from synapse.atomic import read_text, write_atomic

if TYPE_CHECKING:  # for annotations only: synapse.config (which synapse.model imports) imports us
    from synapse.model import DesiredService

MAP_KINDS = ("exact", "wildcard", "paths")
ROUTE_VAR = "txn.synapse_route"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
# Characters a path prefix may hold: no space, '#', '?' or '\' (map file syntax, query).
_PATH = re.compile(r"/[A-Za-z0-9._~/%:@!$&'()*+,;=-]*")


def check_host(host: str) -> None:
    """Raise ValueError unless ``host`` is a lowercase DNS name or ``*.`` + one."""
    if host != host.lower():
        raise ValueError(f"host {host!r} must be lowercase (write {host.lower()!r})")
    if len(host) > 253 or not _HOST.fullmatch(host):
        raise ValueError(
            f"host {host!r} is not a DNS name (labels of a-z, 0-9, '-') or a wildcard "
            f"'*.' followed by one; no port, no scheme{_punycode_hint(host)}"
        )


def _punycode_hint(host: str) -> str:
    """An internationalised name is sent in the Host header as its ASCII (punycode) form:
    "; clients send 'xn--bcher-kva.example'" for 'bücher.example'; "" when there is none."""
    if host.isascii():
        return ""
    try:
        ascii_form = host.encode("idna").decode("ascii")
        # Python's codec is IDNA 2003, which maps some letters away ('ß' -> 'ss') where
        # browsers keep them: a form that does not decode back is not offered.
        same = ascii_form.encode("ascii").decode("idna") == host
    except UnicodeError:
        return ""
    fits = same and _HOST.fullmatch(ascii_form)
    return f"; clients send it as {ascii_form!r}: write that" if fits else ""


def check_path(path: str) -> None:
    """Raise ValueError unless ``path`` is a path prefix we can put in a map file."""
    if not _PATH.fullmatch(path):
        raise ValueError(
            f"path {path!r} must start with '/' and hold only letters, digits and "
            "._~/%:@!$&'()*+,;=- (no space, '#', '?' or '\\')"
        )


def frontend_mode(lines: Iterable[str], defaults: Iterable[str]) -> str:
    """A frontend's mode: its last ``mode`` line, else the defaults' last, else tcp."""
    for source in (lines, defaults):
        modes = [line.split()[1] for line in source if line.split()[:1] == ["mode"]]
        if modes and len(modes[-1].split()) > 0:
            return modes[-1].lower()
    return "tcp"


class RouteSpec(NamedTuple):
    """One service's routes: the backend they lead to, its hosts and its path prefixes."""

    backend: str
    hosts: Iterable[str]
    paths: Iterable[str]


class RouteCollision(ValueError):
    """The same host + path is routed to two services."""


@dataclass(frozen=True)
class RouteMaps:
    """The compiled maps: per kind (MAP_KINDS), key -> backend."""

    exact: Mapping[str, str] = field(default_factory=dict)
    wildcard: Mapping[str, str] = field(default_factory=dict)
    paths: Mapping[str, str] = field(default_factory=dict)

    def by_kind(self) -> dict[str, Mapping[str, str]]:
        return {"exact": self.exact, "wildcard": self.wildcard, "paths": self.paths}

    def __bool__(self) -> bool:
        return bool(self.exact or self.wildcard or self.paths)


def _describe(kind: str, key: str) -> str:
    if kind == "paths":
        return f"path {key} (any host)"
    slash = key.index("/")
    host = "*" + key[:slash] if kind == "wildcard" else key[:slash]
    return f"host {host} path {key[slash:]}"


@functools.lru_cache(maxsize=16384)
def route_keys(hosts: tuple[str, ...], paths: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """One service's (map kind, key) pairs, its hosts and paths checked (ValueError).

    Cached: config loading and every apply compile all services' routes again (a SIGHUP
    on a 500-service edge would check 1,500 hosts twice for the one that changed)."""
    for host in hosts:
        check_host(host)
    for path in paths:
        check_path(path)
    keys: list[tuple[str, str]] = []
    for host in hosts:
        kind, prefix = ("wildcard", host[1:]) if host.startswith("*.") else ("exact", host)
        keys += [(kind, prefix + path) for path in paths or ("/",)]
    if not hosts:
        keys += [("paths", path) for path in paths]
    return tuple(keys)


def compile_routes(routes: Mapping[str, RouteSpec]) -> RouteMaps:
    """Service name -> routes, to maps; RouteCollision when two services share a key.

    The last result is kept: a call that differs from it in a few services patches it
    (a SIGHUP that adds a host to one of 500 services; config loading and the controller
    compile the same routes one after the other). Same result as compiling from scratch.
    """
    global _last
    specs = {name: (s.backend, tuple(s.hosts), tuple(s.paths)) for name, s in routes.items()}
    last = _last
    compiled = _patch(last, specs) if last is not None else None
    if compiled is None:
        compiled = _compile(specs)
    _last = compiled
    return compiled.maps


_Spec = tuple[str, tuple[str, ...], tuple[str, ...]]  # backend, hosts, paths
PATCH_LIMIT = 32  # more services changed than this: compile from scratch


@dataclass(frozen=True)
class _Compiled:
    specs: dict[str, _Spec]
    owners: dict[tuple[str, str], str]  # (kind, key) -> service
    maps: RouteMaps


_last: _Compiled | None = None


def _compile(specs: dict[str, _Spec]) -> _Compiled:
    maps: dict[str, dict[str, str]] = {kind: {} for kind in MAP_KINDS}
    owners: dict[tuple[str, str], str] = {}
    for service in sorted(specs):
        backend, hosts, paths = specs[service]
        for kind, key in route_keys(hosts, paths):
            other = owners.setdefault((kind, key), service)
            if other != service:
                raise RouteCollision(
                    f"{_describe(kind, key)} is routed to two services: {other!r} and {service!r}"
                )
            maps[kind][key] = backend
    return _Compiled(specs, owners, RouteMaps(**maps))


def _patch(last: _Compiled, specs: dict[str, _Spec]) -> _Compiled | None:
    """``last`` with the services that differ in ``specs`` compiled again; None: compile
    from scratch (many changed, or an error, which ``_compile`` words as always)."""
    if specs == last.specs:
        return last
    changed = [n for n in specs.keys() | last.specs.keys() if specs.get(n) != last.specs.get(n)]
    if len(changed) > PATCH_LIMIT:
        return None
    owners = dict(last.owners)
    maps = {kind: dict(entries) for kind, entries in last.maps.by_kind().items()}
    for name in changed:
        if name in last.specs:
            _, hosts, paths = last.specs[name]
            for kind, key in route_keys(hosts, paths):
                owners.pop((kind, key), None)
                maps[kind].pop(key, None)
    for name in changed:
        if name not in specs:
            continue
        backend, hosts, paths = specs[name]
        try:
            keys = route_keys(hosts, paths)
        except ValueError:
            return None
        for kind, key in keys:
            if owners.setdefault((kind, key), name) != name:
                return None
            maps[kind][key] = backend
    return _Compiled(specs, owners, RouteMaps(**maps))


def route_spec(service: DesiredService) -> RouteSpec | None:
    """The routes of an enabled service with ``haproxy.routes`` (None: it has none)."""
    hap = service.config.haproxy
    if not hap.routes or hap.disabled:
        return None
    return RouteSpec(service.backend_name, tuple(hap.routes.hosts), tuple(hap.routes.paths))


def routes_of(services: Iterable[DesiredService]) -> RouteMaps:
    """The maps of the enabled services' ``haproxy.routes``."""
    specs = {service.name: route_spec(service) for service in services}
    return compile_routes({name: spec for name, spec in specs.items() if spec is not None})


# --- files and frontend lines ----------------------------------------------------------


def map_paths(config_path: Path) -> dict[str, Path]:
    """Where the map files live: beside the HAProxy config, named after it."""
    return {
        kind: config_path.with_name(f"{config_path.stem}.routes-{kind}.map") for kind in MAP_KINDS
    }


def map_text(entries: Mapping[str, str]) -> str:
    """A map file: one ``key value`` line per entry, sorted (HAProxy needs no order)."""
    lines = ["# generated by synapse from haproxy.routes: do not edit"]
    lines += [f"{key} {entries[key]}" for key in sorted(entries)]
    return "\n".join(lines) + "\n"


def write_map_files(
    maps: RouteMaps, paths: Mapping[str, Path], known: RouteMaps | None = None
) -> list[Path]:
    """Write the map files that differ from ``maps`` (atomically); the paths written.

    Call it before HAProxy reads the config (a missing map file fails ``haproxy -c``)
    and after runtime map changes (a later reload starts from the files). ``known``: what
    the files were last written with; a kind whose entries are the same is not looked at.
    """
    written = []
    before = known.by_kind() if known is not None else {}
    for kind, entries in maps.by_kind().items():
        if kind in before and before[kind] == entries:
            continue
        path, text = paths[kind], map_text(entries)
        if read_text(path) != text:
            write_atomic(path, text)
            written.append(path)
    return written


def frontend_lines(paths: Mapping[str, Path], shared_lines: Iterable[str]) -> list[str]:
    """The shared frontend's routing lines (after the operator's ``shared_frontend``).

    A request no route matches goes on to the operator's own ``use_backend`` lines and
    ``default_backend``; when the shared frontend has neither, it gets a 404.
    """
    own = [line.split()[0] for line in shared_lines if line.split()]
    found = f"{{ var({ROUTE_VAR}) -m found }}"
    lines = [
        # lowercased, without the port and one trailing dot ("a.example.com." is an FQDN).
        # The whole header (fhdr): hdr splits at commas, so "a.test, b.test" was routed by
        # b.test. None when it holds a '/': it is looked up with the path appended, so
        # "ops.test/public/" + "/admin" matched the route of ops.test + /public/.
        "http-request set-var(txn.synapse_host) req.fhdr(host),field(1,:),lower,regsub([.]$,)"
        " unless { req.fhdr(host) -m sub / }",
        "http-request set-var(txn.synapse_path) path",
        f"http-request set-var({ROUTE_VAR}) var(txn.synapse_host),concat(,txn.synapse_path),"
        f"map_beg({paths['exact']})",
        f"http-request set-var({ROUTE_VAR}) var(txn.synapse_host),regsub(^[^.]*,),"
        f"concat(,txn.synapse_path),map_beg({paths['wildcard']}) unless {found}",
        f"http-request set-var({ROUTE_VAR}) var(txn.synapse_path),map_beg({paths['paths']}) "
        f"unless {found}",
    ]
    if "default_backend" not in own and "use_backend" not in own:
        lines.append(f"http-request return status 404 unless {found}")
    lines.append(f"use_backend %[var({ROUTE_VAR})] if {found}")
    return lines


def runtime_commands(old: RouteMaps, new: RouteMaps, paths: Mapping[str, Path]) -> list[str]:
    """Runtime API commands that turn the running maps ``old`` into ``new``.

    Additions and changes come before removals, so a route moving between keys is never
    missing in between.
    """
    changes: list[str] = []
    removals: list[str] = []
    old_maps = old.by_kind()
    for kind, entries in new.by_kind().items():
        before, path = old_maps[kind], paths[kind]
        if before == entries:
            continue  # (a dict comparison in C; only the differences are sorted below)
        differ = {k for k in entries.keys() & before.keys() if before[k] != entries[k]}
        for key in sorted((entries.keys() - before.keys()) | differ):
            verb = "set" if key in before else "add"
            changes.append(f"{verb} map {path} {key} {entries[key]}")
        removals += [f"del map {path} {key}" for key in sorted(before.keys() - entries.keys())]
    return changes + removals
