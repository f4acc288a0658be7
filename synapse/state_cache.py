"""Airbnb's ``state_file_path`` / ``state_file_ttl``: a cache of recently seen servers.

The file maps service -> HAProxy server name -> the backend record plus the unix
``timestamp`` it was last seen, the format of Airbnb synapse's state file:

    {"web": {"10.0.0.5:8080_web-1": {"timestamp": 1700000000, "host": "10.0.0.5",
                                     "port": 8080, "name": "web-1"}}}

Servers that left stay in the file, marked ``"left": true``, until they were last seen
more than ``state_file_ttl`` ago (Ruby keeps every backend seen within the TTL); they are
never served from it. A service keeps at most MIN_LEFT of them, or as many as it has
servers if more, the most recently seen (as HAProxy's leftovers, synapse/haproxy/leftovers.py):
where instances come with new names (autoscaling) the TTL alone kept every departure of a
day, ~140 B of file and ~2.4 KB of synapse's memory each (4,500 departures: 1.24 MB, +22 MB).
The servers present at the last write are never dropped this way: they are what a synapse
restarted while its registry is down serves. The file is rewritten atomically whenever a
service's discovered servers change (and refreshed well within the TTL while nothing
changes). A synapse that starts while its registry is unreachable configures HAProxy from
the entries younger than the TTL instead of starting empty (an age a step of the wall
clock does not falsify: ``synapse.state_clock``). Entries are validated on load like any record.

Runtime zone evacuations are kept in the same file, under a reserved service key
shaped like any other entry (so the Airbnb format stays intact; they never expire):

    {"_synapse": {"zone_evacuations": {"timestamp": 1700000000,
                                       "global": ["az2"], "services": {"web": ["az3"]}}}}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from smartstack.boot_clock import boot_id, boottime
from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse import state_clock
from synapse.atomic import read_text, write_atomic
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.model import Found
from synapse.selection import (
    HELD_ORIGIN,
    ORIGIN_DISCOVERY,
    ORIGIN_STATE_FILE,
    Selection,
    select_servers,
)
from synapse.state_clock import is_stamp
from synapse.zone_state import Evacuations

log = logging.getLogger("synapse.state_cache")

Entries = dict[str, dict[str, dict[str, Any]]]

RESERVED_SERVICE = "_synapse"  # not a service: synapse's own state
EVACUATIONS_KEY = "zone_evacuations"
# Ruby's key, beside the servers of a service: the generator settings the registry gave
# (synapse/generator_config.py), so a restart during a registry outage keeps them.
GENERATOR_KEY = "watcher_config_for_generator"
YIELD_EVERY = 16  # services the writer's thread handles between GIL hand-overs
# Services rebuilt per write at most: a start (or the refresh a quarter TTL) writes the
# whole file in slices, one a write, so the event loop never shares the GIL with ~50 ms
# of encoding at once (20,000 servers: complete after 10 writes, ~10 s).
REBUILD_BUDGET = 100
MIN_LEFT = 16  # servers marked left a service keeps however few servers it has
# A service's servers marked left: name -> (last seen, its entry as the file has it,
# '"name": {...}'). Kept apart from the servers (an update parses only those) and as text.
Left = dict[str, tuple[float, str]]


class StateCache:
    """The state file, held as one JSON text per service (what the file holds): 20,000
    servers cost ~2.5 MB this way rather than ~11 MB of dicts, and a service that did not
    change is neither rebuilt nor encoded again. A service's entries are parsed back only
    when asked for (a start, a service without a report, a rebuild); its servers marked
    left are held apart (``Left``) and joined to its line only when the file is written."""

    def __init__(
        self,
        path: str | Path,
        ttl: float,
        clock: Callable[[], float] = time.time,
        boot: Callable[[], float] = boottime,
        boot_of: Callable[[], str | None] = boot_id,
    ) -> None:
        self.path = Path(path)
        self.ttl = ttl
        self.clock, self._boot, self._boot_id = clock, boot, boot_of  # (synapse.state_clock)
        # Services whose stamps are another boot's wall clock (not ours: a step of ours
        # does not move them), until rebuilt from discovery.
        self._foreign: set[str] = set()
        self._texts: dict[str, str] = {}  # service -> "name": {its servers} (none left)
        self._left: dict[str, Left] = {}  # service -> its servers marked left
        self._generators: dict[str, dict[str, Any]] = {}  # service -> its GENERATOR_KEY
        self._built: dict[str, Selection] = {}  # service -> the selection its text came from
        self._written_at: float | None = None
        self.pending = False  # the last update left services for the next one (budget)
        self.last_error: str | None = None
        self.evacuations = Evacuations()
        # The evacuations changed and no write has kept them yet (a full or read-only disk):
        # every later update writes the file, so they are kept once the disk is back.
        self.evacuations_unsaved = False
        # Writes run in threads (the reconciler's update, the zone API's evacuations): one
        # at a time, each with the evacuations current when it writes, or an update that
        # read the old ones could land last and put them back.
        self._write_lock = threading.RLock()
        # Managed: the config file HAProxy runs was written by something else after this
        # synapse's last write (an older synapse, after a rollback: it never updates this
        # file): merged with what the adopted HAProxy runs (adopted_servers).
        self.behind_haproxy = False

    # --- reading -------------------------------------------------------------------

    def load(self) -> None:
        """Read the file if there is one; a broken file is logged and ignored."""
        text = read_text(self.path)
        if text is None:
            return
        try:
            doc = json.loads(text)
        except ValueError as exc:
            self._fail("state_file_unreadable", f"not JSON: {exc}")
            return
        if not isinstance(doc, dict):
            self._fail("state_file_unreadable", "top level is not an object")
            return
        own = doc.pop(RESERVED_SERVICE, None)
        services = {str(service): {str(k): v for k, v in servers.items() if isinstance(v, dict)}
                    for service, servers in doc.items() if isinstance(servers, dict)}  # fmt: skip
        # (the stamps' ages made true against a step of the wall clock: synapse.state_clock)
        now, boot = self.clock(), (self._boot(), self._boot_id())
        services, self._foreign, step = state_clock.as_read(own, services, now, *boot)
        for service, servers in services.items():
            self._keep(service, servers)
        if step:
            event(log, "state_file_clock_stepped", path=str(self.path), step_s=round(step, 1),
                  effect="stamps moved by the step")  # fmt: skip
        if isinstance(own, dict) and EVACUATIONS_KEY in own:
            try:
                self.evacuations = Evacuations.from_json(own[EVACUATIONS_KEY])
            except ValueError as exc:
                event(log, "state_file_bad_evacuations", level=logging.WARNING,
                      path=str(self.path), reason=str(exc)[:200], effect="none kept")  # fmt: skip
        event(log, "state_file_loaded", path=str(self.path), services=len(self._texts))

    def entries(self, service: str) -> dict[str, dict[str, Any]]:
        """``service``'s entries as the file has them, those marked left too."""
        line = self._texts.get(service)
        return _parse(service, _line(line, self._left.get(service))) if line is not None else {}

    def _servers(self, service: str) -> dict[str, dict[str, Any]]:
        """``service``'s entries but those marked left: what an update compares."""
        line = self._texts.get(service)
        return _parse(service, line) if line is not None else {}

    def cached(self, service: str) -> list[Found] | None:
        """Servers of ``service`` seen within the TTL, or None when the cache has none."""
        cutoff = self.clock() - self.ttl
        found: list[Found] = []
        for key, data in sorted(self._servers(service).items()):
            if key == GENERATOR_KEY:
                continue
            stamp = data.get("timestamp")
            if not is_stamp(stamp) or stamp < cutoff or data.get("left"):
                continue  # too old, or a server that had left when the file was written
            try:
                registration = registration_from_dict(data, fallback_name=_entry_name(key))
            except InvalidRecord as exc:
                event(log, "state_file_bad_entry", level=logging.WARNING, service=service,
                      server=key[:100], reason=exc.reason)  # fmt: skip
                continue
            sequence = data.get("id")  # kept for leader_election (selection.py)
            if not isinstance(sequence, int) or isinstance(sequence, bool):
                sequence = None
            found.append(Found(registration, f"state_file:{key}", sequence))
        return found or None

    def selection(
        self, service: str, config: ServiceConfig, policy: RegistryServerOptions | None
    ) -> Selection:
        """``service``'s servers here as a restarted synapse's "previous list", for
        ``use_previous_backends``: the servers HAProxy ran, not nothing. Its first report
        may be empty (a registry glitch, a path not there yet): that must not empty it."""
        return select_servers(config, self.cached(service), None, policy, ORIGIN_STATE_FILE)

    def generator(self, service: str) -> dict[str, Any]:
        """The generator settings the registry last gave ``service`` ({}: none)."""
        found = self._generators.get(service)
        return {k: v for k, v in found.items() if isinstance(v, dict)} if found else {}

    # --- writing -------------------------------------------------------------------

    def update(
        self,
        selections: Mapping[str, Selection],
        services: Iterable[str],
        generators: Mapping[str, Mapping[str, Any]] | None = None,
        budget: int | None = REBUILD_BUDGET,
    ) -> bool:
        """Record the currently discovered servers; write the file if anything changed.

        Only servers that came from discovery are cached (not defaults, not a kept
        previous list). Services no longer configured are dropped. Returns True when
        the file was written. Costs what changed: a service whose selection is the very
        object of the last update keeps its text, so a change in a fleet of 20,000
        servers does not rebuild and encode them all.
        """
        with self._write_lock:  # (a step's move of the stamps waits: clock_stepped)
            return self._update(selections, services, generators, budget)

    def _update(
        self,
        selections: Mapping[str, Selection],
        services: Iterable[str],
        generators: Mapping[str, Mapping[str, Any]] | None,
        budget: int | None,
    ) -> bool:
        now = self.clock()
        # (a clock stepped back: at once, or its stamps would wait the step to be renewed)
        stale = self._written_at is None or not 0 <= now - self._written_at <= self.ttl / 4
        if stale:
            self._built = {}  # every service is due: rebuilt (stamped again) from now on
        self.pending = False
        configured = set(services)
        texts = {s: text for s, text in self._texts.items() if s in configured}
        lefts = {s: left for s, left in self._left.items() if s in configured}
        gens = {s: g for s, g in self._generators.items() if s in configured}
        changed = len(texts) != len(self._texts)
        built: dict[str, Selection] = {}
        for service, selection in selections.items():
            # a service named like the reserved key is not cached (it would clobber it)
            if selection.origin != ORIGIN_DISCOVERY or service == RESERVED_SERVICE:
                continue
            if self._built.get(service) is selection:
                continue  # (its text was made from this very selection)
            if budget is not None and len(built) >= budget:  # (a start: a slice a write)
                self.pending = True
                continue
            _let_the_loop_run(len(built))
            old, was = self._servers(service), self._left.get(service, {})
            current = _current(selection, old, was, int(now))
            left = _bounded({**was, **_departed(old, current)}, current, now - self.ttl)
            changed = changed or left.keys() != was.keys()
            changed = changed or _strip_all(current) != _strip_all(old, keep_generator=False)
            texts[service], built[service] = _encode(service, current, gens.get(service)), selection
            lefts[service] = left
            self._foreign.discard(service)  # (stamped now, on our clock)
        for service in configured if generators is not None else ():
            found = dict(generators.get(service) or {})  # type: ignore[union-attr]
            if gens.get(service, {}) == found:
                continue
            servers = {k: v for k, v in self._servers(service).items() if k != GENERATOR_KEY}
            if service in built:  # (rebuilt above: its new servers, not the file's)
                servers = {
                    k: v for k, v in _parse(service, texts[service]).items() if k != GENERATOR_KEY
                }
            if found:
                gens[service] = found
            else:
                gens.pop(service, None)
            if servers or found or service in texts:
                texts[service], changed = _encode(service, servers, found or None), True
        if not changed and not stale and not self.evacuations_unsaved:
            self._built.update(built)  # (equal entries: nothing to write)
            return False
        if not self._write(texts, now, lefts):
            return False
        self._generators = gens
        self._built = {s: b for s, b in {**self._built, **built}.items() if s in texts}
        return True

    def refresh(
        self,
        selections: Mapping[str, Selection],
        services: Iterable[str],
        generators: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> bool:
        """Called periodically: rewrites the file once a quarter of the TTL has passed."""
        return self.update(selections, services, generators)

    def save_evacuations(self, evacuations: Evacuations) -> bool:
        """Keep the runtime zone evacuations across a restart: the file is written now.
        False when it could not be: they stay the cache's, ``evacuations_unsaved``, and
        the next update writes them."""
        with self._write_lock:
            self.evacuations = evacuations
            self.evacuations_unsaved = not self._write(self._texts, self.clock())
            return not self.evacuations_unsaved

    def replace(self, services: Mapping[str, Mapping[str, dict[str, Any]]]) -> bool:
        """``services``' servers become these entries (stamped; generator settings stay),
        those they drop marked left, and the file is written now (``adopted_servers``: a
        file behind HAProxy). False when it could not be written (logged; kept here)."""
        with self._write_lock:
            cutoff = self.clock() - self.ttl
            for service, servers in services.items():
                old = self._servers(service)
                current = {**servers, **{k: v for k, v in old.items() if k == GENERATOR_KEY}}
                was = self._left.get(service, {})
                self._left[service] = _bounded({**was, **_departed(old, current)}, current, cutoff)
                self._texts[service] = _encode(service, current, None)
                self._built.pop(service, None)
                self._foreign.discard(service)
            return self._write(self._texts, self.clock())

    def clock_stepped(self, step: float) -> bool:
        """The wall clock stepped by ``step`` seconds while synapse ran: the stamps made on
        it (or read in this boot) are moved by the step, so the servers keep their true
        age, and the file is written now (a reboot in a minute must find true stamps).
        Another boot's stamps stay (a step is most often the correction of a clock that
        was wrong: theirs are the true clock's). Whether the file was written."""
        with self._write_lock:
            for service in [s for s in self._texts if s not in self._foreign]:
                self._keep(service, state_clock.shifted(self.entries(service), step))
            return self._write(self._texts, self.clock())

    def _keep(self, service: str, servers: Mapping[str, Any]) -> None:
        """A service as the file had it: its servers marked left apart, bounded already
        (a file an older synapse wrote may hold a day of departures)."""
        found = servers.get(GENERATOR_KEY)
        if isinstance(found, dict):
            self._generators[service] = found
        current = {k: v for k, v in servers.items() if k == GENERATOR_KEY or not v.get("left")}
        left = _departed(servers, current)  # (those marked left: not among ``current``)
        self._left[service] = _bounded(left, current, self.clock() - self.ttl)
        self._texts[service] = _encode(service, current, None)

    def _write(
        self, texts: Mapping[str, str], now: float, lefts: Mapping[str, Left] | None = None
    ) -> bool:
        """``lefts``: the services' servers marked left (None: those the cache holds)."""
        with self._write_lock:
            return self._write_now(texts, self._left if lefts is None else lefts, now)

    def _write_now(self, texts: Mapping[str, str], lefts: Mapping[str, Left], now: float) -> bool:
        lines = {s: _line(text, lefts.get(s)) for s, text in texts.items()}
        own: dict[str, Any] = {}
        if self.evacuations != Evacuations():  # none (and no server): Airbnb's plain form
            own[EVACUATIONS_KEY] = {"timestamp": int(now), **self.evacuations.to_json()}
        if texts:  # (when written, on the boot's clock: synapse.state_clock)
            earlier = self._foreign & texts.keys()
            own.update(state_clock.written(now, self._boot(), self._boot_id(), earlier))
        if own:
            lines[RESERVED_SERVICE] = _encode(RESERVED_SERVICE, own, None)
        body = ",\n".join(lines[s] for s in sorted(lines))
        try:
            write_atomic(self.path, "{\n" + body + "\n}\n")
        except OSError as exc:
            self._fail("state_file_write_failed", str(exc))
            return False
        self._texts, self._left = dict(texts), {s: lefts[s] for s in texts if lefts.get(s)}
        self._written_at = now
        self.last_error = None
        self.evacuations_unsaved = False  # (written with the current ones)
        return True

    def _fail(self, name: str, reason: str) -> None:
        self.last_error = reason
        event(log, name, level=logging.WARNING, path=str(self.path), reason=reason[:200])


def _let_the_loop_run(index: int) -> None:
    """Every YIELD_EVERY services, hand the GIL over: the writer runs in a thread, and
    the event loop would otherwise wait up to a switch interval (5 ms) for it, which a
    registry change in flight would pay (a first write of 20,000 servers holds it ~50 ms)."""
    if index % YIELD_EVERY == YIELD_EVERY - 1:
        time.sleep(0)


def _current(selection: Selection, old: Mapping[str, Any], left: Left, now: int) -> Entries:
    """A selection's discovered servers, stamped ``now``; a server only a partial report's
    hold keeps (HELD_ORIGIN: its registry has not said) keeps the stamp it had, so it ages
    out of the file in state_file_ttl as any server not seen (none: not cached)."""
    current: dict[str, dict[str, Any]] = {}
    for server, record in zip(selection.servers, selection.records, strict=True):
        if server.origin == "default":
            continue
        stamp: Any = now
        if server.origin.startswith(HELD_ORIGIN):
            stamp = old.get(server.name, {}).get("timestamp")
            if not is_stamp(stamp) and server.name in left:
                stamp = left[server.name][0]
            if not is_stamp(stamp):
                continue
        current[server.name] = {"timestamp": stamp, **record}
    return current  # type: ignore[return-value]


def _departed(old: Mapping[str, Any], current: Mapping[str, Any]) -> Left:
    """The servers of ``old`` not among ``current``, marked left (their stamps kept)."""
    left: Left = {}
    for key, data in old.items():
        stamp = data.get("timestamp")
        if key != GENERATOR_KEY and key not in current and is_stamp(stamp):
            entry = json.dumps({**data, "left": True}, sort_keys=True)
            left[key] = (stamp, f"{json.dumps(key)}: {entry}")
    return left


def _bounded(left: Left, current: Mapping[str, Any], cutoff: float) -> Left:
    """``left`` without the servers back among ``current`` or last seen before ``cutoff``,
    and at most the larger of MIN_LEFT and the servers of ``current``, the most recently
    seen (a redeploy that replaced every server keeps them all)."""
    kept = {k: v for k, v in left.items() if k not in current and v[0] >= cutoff}
    cap = max(MIN_LEFT, len(current) - (GENERATOR_KEY in current))
    if len(kept) <= cap:
        return kept
    newest = sorted(kept, key=lambda k: (kept[k][0], k), reverse=True)[:cap]
    return {k: kept[k] for k in newest}


def _entry_name(key: str) -> str:
    """The name of an entry without one: Ruby writes ``"name": null`` for a nameless
    record, under its HAProxy server name (``host:port``). As a nameless ZooKeeper record
    is named after its node, it is named after its key (leading ``:`` of an IPv6 host
    left off: a name begins with a letter or digit)."""
    return key.lstrip("._:-") or key


def _strip(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "timestamp"}


def _strip_all(servers: Mapping[str, Any], keep_generator: bool = True) -> dict[str, Any]:
    return {k: _strip(v) for k, v in servers.items() if keep_generator or k != GENERATOR_KEY}


def _encode(service: str, servers: Mapping[str, Any], generator: Mapping[str, Any] | None) -> str:
    """A service's line of the file, ``"name": {...}`` (json's C encoder: no indent)."""
    if generator:
        servers = {**servers, GENERATOR_KEY: dict(generator)}
    return f"{json.dumps(service)}: {json.dumps(servers, sort_keys=True)}"


def _line(text: str, left: Left | None) -> str:
    """A service's line of the file: its servers' text with those marked left joined in."""
    if not left:
        return text
    tail = ", ".join(left[key][1] for key in sorted(left)) + "}"
    return text[:-1] + tail if text.endswith("{}") else f"{text[:-1]}, {tail}"


def _parse(service: str, line: str) -> dict[str, Any]:
    return json.loads(line[len(json.dumps(service)) + 2 :])
