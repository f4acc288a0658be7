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

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from smartstack.boot_clock import STEP_MIN, wall_offset
from smartstack.logs import event
from synapse import state_clock
from synapse.atomic import write_atomic
from synapse.restart_held import held_moved, written_keys
from synapse.selection import ORIGIN_DISCOVERY, Selection
from synapse.state_entries import (
    GENERATOR_KEY,
    Left,
    bounded,
    current_entries,
    departed,
    encode,
    let_the_loop_run,
    line_of,
    parse_line,
    strip_all,
)
from synapse.state_read import EVACUATIONS_KEY, RESERVED_SERVICE, StateFileView
from synapse.zone_state import Evacuations

log = logging.getLogger("synapse.state_cache")

# Services rebuilt per write at most: a start (or the refresh a quarter TTL) writes the
# whole file in slices, one a write, so the event loop never shares the GIL with ~50 ms
# of encoding at once (20,000 servers: complete after 10 writes, ~10 s).
REBUILD_BUDGET = 100


class StateCache(StateFileView):
    """The state file kept: ``update`` records the discovered servers (a changed service
    rebuilt and encoded alone), the evacuations and a step of the wall clock are written
    at once; one write at a time (``_write_lock``)."""

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
        if not changed and not stale and not self.evacuations_unsaved and not self.failing:
            self._built.update(built)  # (equal entries: nothing to write)
            return False
        if not self._write(texts, now, lefts, current=True):
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

    @property
    def failing(self) -> bool:
        """A write failed and none has caught the file up since: it lags what synapse
        serves; every update writes it again (``RoundOutputs`` retries each second while
        this holds). An evacuation's write of the older servers does not end it (``behind``)."""
        return self.write_streak.failing

    def abandon(self, moved_to: str | None) -> None:
        """A SIGHUP moved the file (``moved_to``; None: no state file now) while its writes
        failed: their streak ends here, said (nothing will retry this path)."""
        self.write_streak.abandoned("state_file_write_abandoned", moved_to=moved_to)

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

    def _write(
        self, texts: Mapping[str, str], now: float, lefts: Mapping[str, Left] | None = None,
        current: bool = False,
    ) -> bool:  # fmt: skip
        """``lefts``: the services' servers marked left (None: those the cache holds).
        ``current``: an update's, the servers synapse serves now (else those last written)."""
        with self._write_lock:
            left = self._left if lefts is None else lefts
            return self._write_now(texts, left, now, current)

    def _write_now(
        self, texts: Mapping[str, str], lefts: Mapping[str, Left], now: float, current: bool
    ) -> bool:
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
            write_atomic(self.path, "{\n" + body + "\n}\n")  # (no temp file left on failure)
        except OSError as exc:
            self.last_error = str(exc)
            effect = "retried each second; a start with the registry down serves the file's"
            self.write_streak.write_failed(exc, effect=effect)
            self.behind = self.behind or current  # (its servers are kept nowhere but here)
            return False
        self._texts, self._left = dict(texts), {s: lefts[s] for s in texts if lefts.get(s)}
        if len(self._keys) > len(texts) or len(self._stamps) > len(texts):
            self._forget_unwritten()  # (services that left: soak s45)
        self._written_at = now
        self.last_error = None
        self.behind = self.behind and not current
        if not self.behind:  # (the older servers written, on a nearly full disk: no flap)
            self.write_streak.written()
        self.evacuations_unsaved = False  # (written with the current ones)
        return True

    def _vouched(self, service: str, text: str, left: Left | None) -> Any:
        """``service``'s newest stamp as its line in the file has it (None: no stamp)."""
        stamps = [self._newest(service, text), *(seen for seen, _ in (left or {}).values())]
        return max((s for s in stamps if s is not None), default=None)
