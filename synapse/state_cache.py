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

from smartstack.boot_clock import STEP_MIN, boot_id, boottime, wall_offset
from smartstack.logs import event
from smartstack.record import InvalidRecord, registration_from_dict
from synapse import state_clock
from synapse.atomic import read_text, write_atomic
from synapse.config import RegistryServerOptions, ServiceConfig
from synapse.model import Found
from synapse.restart_held import KeyOf, Recorded, held_moved, read_keys, written_keys
from synapse.selection import (
    ORIGIN_DISCOVERY,
    ORIGIN_STATE_FILE,
    Selection,
    select_servers,
)
from synapse.state_clock import is_stamp
from synapse.state_entries import (
    GENERATOR_KEY,
    Left,
    bounded,
    current_entries,
    departed,
    encode,
    entry_name,
    let_the_loop_run,
    line_of,
    parse_line,
    strip_all,
)
from synapse.zone_state import Evacuations

log = logging.getLogger("synapse.state_cache")

RESERVED_SERVICE = "_synapse"  # not a service: synapse's own state
EVACUATIONS_KEY = "zone_evacuations"
# Services rebuilt per write at most: a start (or the refresh a quarter TTL) writes the
# whole file in slices, one a write, so the event loop never shares the GIL with ~50 ms
# of encoding at once (20,000 servers: complete after 10 writes, ~10 s).
REBUILD_BUDGET = 100


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
        boot: Callable[[], float] | None = None,
        boot_of: Callable[[], str | None] = boot_id,
        key_of: KeyOf | None = None,
    ) -> None:
        self.path = Path(path)
        # service -> key of the discovery that listed its servers (``key_of``: restart_held)
        self._keys: dict[str, Recorded | None] = {}
        self._key_of = key_of
        self.ttl = ttl
        if boot is None:  # (a wall clock injected alone is one that never steps)
            boot = boottime if clock is time.time else clock
        self.clock, self._boot, self._boot_id = clock, boot, boot_of  # (synapse.state_clock)
        # Services whose stamps are another boot's wall clock (not ours: a step of ours
        # does not move them), until rebuilt from discovery.
        self._foreign: set[str] = set()
        # The wall clock's lead over boottime the stamps held here are on (set at the load
        # and whenever a step is caught up with, under the write lock): a step is applied
        # to them once, whichever of an update, the watcher or a reload sees it first.
        self._offset = wall_offset(clock(), boot())
        # service -> (its text, its newest stamp): what the clock record vouches for, and
        # what lets ``cached`` answer None without parsing a service that is all too old.
        self._stamps: dict[str, tuple[str, float | None]] = {}
        self._warned: dict[str, str] = {}  # service -> the text whose bad entries were logged
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
        with self._write_lock:
            services, self._foreign, step = state_clock.as_read(own, services, now, *boot)
            for service, servers in services.items():
                self._keep(service, servers)
            self._offset = wall_offset(now, boot[0])  # (what the stamps are on now)
            self._keys = {s: k for s, k in read_keys(own).items() if s in self._texts}
        if step:
            event(log, "state_file_clock_stepped", path=str(self.path), step_s=round(step, 1),
                  effect="the stamps the record vouches for moved by the step")  # fmt: skip
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
        return (
            parse_line(service, line_of(line, self._left.get(service))) if line is not None else {}
        )

    def _servers(self, service: str) -> dict[str, dict[str, Any]]:
        """``service``'s entries but those marked left: what an update compares."""
        line = self._texts.get(service)
        return parse_line(service, line) if line is not None else {}

    def cached(self, service: str) -> list[Found] | None:
        """Servers of ``service`` seen within the TTL, or None when the cache has none.
        (Asked every round for a silent service serving nothing: one all too old is not
        parsed, and a bad entry is logged once per text of its service.)"""
        cutoff = self.clock() - self.ttl
        line = self._texts.get(service)
        stamp = self._newest(service, line) if line is not None else None
        if stamp is None or stamp < cutoff:
            return None
        quiet, bad = self._warned.get(service) is line, False
        found: list[Found] = []
        for key, data in sorted(self._servers(service).items()):
            if key == GENERATOR_KEY:
                continue
            stamp = data.get("timestamp")
            if not is_stamp(stamp) or stamp < cutoff or data.get("left"):
                continue  # too old, or a server that had left when the file was written
            try:
                registration = registration_from_dict(data, fallback_name=entry_name(key))
            except InvalidRecord as exc:
                bad = True
                if not quiet:
                    event(log, "state_file_bad_entry", level=logging.WARNING, service=service,
                          server=key[:100], reason=exc.reason)  # fmt: skip
                continue
            sequence = data.get("id")  # kept for leader_election (selection.py)
            if not isinstance(sequence, int) or isinstance(sequence, bool):
                sequence = None
            found.append(Found(registration, f"state_file:{key}", sequence))
        if bad and line is not None:
            self._warned[service] = line
        return found or None

    def _newest(self, service: str, line: str) -> float | None:
        """The newest stamp of ``service``'s servers (``line``: its text), parsed once a text."""
        memo = self._stamps.get(service)
        if memo is None or memo[0] is not line:
            memo = (line, state_clock.newest(parse_line(service, line)))
            self._stamps[service] = memo
        return memo[1]

    def _encoded(
        self, service: str, servers: Mapping[str, Any], generator: Mapping[str, Any] | None
    ) -> str:
        """``_encode``, its newest stamp kept (``_newest``) while the servers are at hand."""
        text = encode(service, servers, generator)
        self._stamps[service] = (text, state_clock.newest(servers))
        return text

    def selection(
        self, service: str, config: ServiceConfig, policy: RegistryServerOptions | None
    ) -> Selection:
        """``service``'s servers here as a restarted synapse's "previous list", for
        ``use_previous_backends``: the servers HAProxy ran, not nothing. Its first report
        may be empty (a registry glitch, a path not there yet): that must not empty it."""
        return select_servers(config, self.cached(service), None, policy, ORIGIN_STATE_FILE)

    def discovery_key(self, service: str) -> Recorded | None:
        """The record of the discovery its servers came from (restart_held; None: unknown)."""
        return self._keys.get(service)

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
            self._catch_up()  # (before stamping: the new stamps are on the clock as it is)
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
        changed = len(texts) != len(self._texts) or held_moved(self._key_of, self._keys, texts)
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
            let_the_loop_run(len(built))
            old, was = self._servers(service), self._left.get(service, {})
            current = current_entries(selection, old, was, int(now))
            left = bounded({**was, **departed(old, current)}, current, now - self.ttl)
            changed = changed or left.keys() != was.keys()
            changed = changed or strip_all(current) != strip_all(old, keep_generator=False)
            texts[service] = self._encoded(service, current, gens.get(service))
            built[service] = selection
            lefts[service] = left
            self._keys[service] = self._key_of(service) if self._key_of else None
            self._foreign.discard(service)  # (stamped now, on our clock)
        for service in configured if generators is not None else ():
            found = dict(generators.get(service) or {})  # type: ignore[union-attr]
            if gens.get(service, {}) == found:
                continue
            servers = {k: v for k, v in self._servers(service).items() if k != GENERATOR_KEY}
            if service in built:  # (rebuilt above: its new servers, not the file's)
                servers = {
                    k: v
                    for k, v in parse_line(service, texts[service]).items()
                    if k != GENERATOR_KEY
                }
            if found:
                gens[service] = found
            else:
                gens.pop(service, None)
            if servers or found or service in texts:
                texts[service], changed = self._encoded(service, servers, found or None), True
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
            self._catch_up()  # (the record written vouches for the stamps as they are)
            self.evacuations = evacuations
            self.evacuations_unsaved = not self._write(self._texts, self.clock())
            return not self.evacuations_unsaved

    def replace(self, services: Mapping[str, Mapping[str, dict[str, Any]]]) -> bool:
        """``services``' servers become these entries (stamped; generator settings stay),
        those they drop marked left, and the file is written now (``adopted_servers``: a
        file behind HAProxy). False when it could not be written (logged; kept here)."""
        with self._write_lock:
            self._catch_up()
            cutoff = self.clock() - self.ttl
            for service, servers in services.items():
                old = self._servers(service)
                current = {**servers, **{k: v for k, v in old.items() if k == GENERATOR_KEY}}
                was = self._left.get(service, {})
                self._left[service] = bounded({**was, **departed(old, current)}, current, cutoff)
                self._texts[service] = self._encoded(service, current, None)
                self._built.pop(service, None)
                self._foreign.discard(service)
            return self._write(self._texts, self.clock())

    def step_pending(self) -> bool:
        """Whether the wall clock stepped since the stamps here were last put on it."""
        return abs(wall_offset(self.clock(), self._boot()) - self._offset) >= STEP_MIN

    def clock_stepped(self) -> float | None:
        """The wall clock stepped while synapse ran: the stamps made on it (or read in this
        boot) are moved by the step not applied to them yet, so the servers keep their true
        age, and the file is written now (a reboot in a minute must find true stamps).
        The step moved by (None: none left to apply)."""
        with self._write_lock:
            step = self._catch_up()
            if step is not None:
                self._write(self._texts, self.clock())
            return step

    def _catch_up(self) -> float | None:
        """Under the write lock: move this boot's stamps by the step the wall clock made
        since they were put on it (``_offset``), once. Another boot's stamps stay (a step
        is most often the correction of a clock that was wrong: theirs are the true
        clock's). The step (None: below STEP_MIN)."""
        offset = wall_offset(self.clock(), self._boot())
        step = offset - self._offset
        if abs(step) < STEP_MIN:
            return None
        for service in [s for s in self._texts if s not in self._foreign]:
            self._keep(service, state_clock.shifted(self.entries(service), step))
        self._offset = offset
        event(log, "state_file_clock_stepped", level=logging.WARNING, path=str(self.path),
              step_s=round(step, 1), effect="stamps of this boot moved by the step")  # fmt: skip
        return step

    def _keep(self, service: str, servers: Mapping[str, Any]) -> None:
        """A service as the file had it: its servers marked left apart, bounded already
        (a file an older synapse wrote may hold a day of departures)."""
        found = servers.get(GENERATOR_KEY)
        if isinstance(found, dict):
            self._generators[service] = found
        current = {k: v for k, v in servers.items() if k == GENERATOR_KEY or not v.get("left")}
        left = departed(servers, current)  # (those marked left: not among ``current``)
        self._left[service] = bounded(left, current, self.clock() - self.ttl)
        self._texts[service] = self._encoded(service, current, None)

    def _write(
        self, texts: Mapping[str, str], now: float, lefts: Mapping[str, Left] | None = None
    ) -> bool:
        """``lefts``: the services' servers marked left (None: those the cache holds)."""
        with self._write_lock:
            return self._write_now(texts, self._left if lefts is None else lefts, now)

    def _write_now(self, texts: Mapping[str, str], lefts: Mapping[str, Left], now: float) -> bool:
        lines = {s: line_of(text, lefts.get(s)) for s, text in texts.items()}
        own: dict[str, Any] = {}
        if self.evacuations != Evacuations():  # none (and no server): Airbnb's plain form
            own[EVACUATIONS_KEY] = {"timestamp": int(now), **self.evacuations.to_json()}
        if texts:  # (the clock the stamps are on, on the boot's: synapse.state_clock)
            earlier = self._foreign & texts.keys()
            stamps = {s: self._vouched(s, t, lefts.get(s)) for s, t in texts.items()}
            boot = now - self._offset  # (the boottime at which the stamps' clock read ``now``)
            own.update(state_clock.written(now, boot, self._boot_id(), earlier, stamps))
        own.update(written_keys(self._keys, texts, now, self._key_of))
        if own:
            lines[RESERVED_SERVICE] = encode(RESERVED_SERVICE, own, None)
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

    def _vouched(self, service: str, text: str, left: Left | None) -> Any:
        """``service``'s newest stamp as its line in the file has it (None: no stamp)."""
        stamps = [self._newest(service, text), *(seen for seen, _ in (left or {}).values())]
        return max((s for s in stamps if s is not None), default=None)

    def _fail(self, name: str, reason: str) -> None:
        self.last_error = reason
        event(log, name, level=logging.WARNING, path=str(self.path), reason=reason[:200])
