"""Holding back the repeats of HAProxy's health-check transitions (pure: no clock, no I/O).

A server whose check flaps prints "Server be/s is DOWN, reason: ..." and "... is UP, reason:
..." (and its backend "[ALERT] ... backend 'be' has no server available!") at every
transition: ~90 lines a minute per server flapping every second. The first lines of a
server (or backend) in a window are relayed at once, as any line (an operator sees a server
go down when it does); its repeats within the window are counted into one summary per
window, and at the summary the server's last transition is relayed too when it is not the
state last relayed (the log's last word on a server is its current state). A held-back line
that SETTLE seconds pass without another of its server (or backend) is relayed then, at its
own level: a state that holds is news (a real outage after a bounce), a flap is not. A
backend's held alert is so relayed unless a server of it came UP since (it is no longer
true); a server put in maintenance (or added anew) has its held line dropped (stale).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

CHECK_WINDOW = 30.0  # seconds: a server's (or backend's) window, and the summary's interval
SERVER_BURST = 2  # a server's lines relayed per window: a single bounce shows DOWN and UP
BACKEND_BURST = 1  # a backend's "no server available" relayed per window
# seconds a held-back line must stand (no newer one of its key) to be relayed: longer than the
# quickest flap of synapse's default check (rise 2 / fall 2 at inter 2 s: 4 s between
# transitions), short next to the window (a real outage is not logged 30 s late)
SETTLE = 5.0

# HAProxy 2.6 (server.c): "%sServer %s/%s is DOWN" / "is UP" then srv_append_status's
# ", reason: ...", " via be/s" (a tracked server) or ". N active and ..."; "%sServer" is
# "Backup Server" for a backup. "CLI : Server ..." lines (runtime commands) are not checks.
_CHECK = re.compile(r"\[WARNING\] +\(\d+\) : (?:Backup )?Server (\S+) is (UP|DOWN)(?:, | via |\. )")
_NO_SERVER = re.compile(r"\[ALERT\] +\(\d+\) : \S+ '?([^' ]+?)'? has no server available!")
# the server a notice names ("Server be/s is going DOWN ...", "'server be/s' : New ...")
_NAMED = re.compile(r" : (?:CLI : )?(?:(?:Backup )?Server (\S+) |'server ([^']+)' : )")


class Transition(NamedTuple):
    kind: str  # "check_down", "check_up", "no_server"
    key: str  # the server ("be/s") or the backend ("backend be")
    state: str  # "UP"/"DOWN"; "" for a backend's alert (always the same)
    burst: int


def transition(text: str) -> Transition | None:
    """The health-check transition a line of HAProxy's says (None: any other line)."""
    found = _CHECK.match(text)
    if found is not None:
        return Transition(f"check_{found[2].lower()}", found[1], found[2], SERVER_BURST)
    found = _NO_SERVER.match(text)
    if found is not None:
        return Transition("no_server", f"backend {found[1]}", "", BACKEND_BURST)
    return None


def named_server(text: str) -> str | None:
    """The server ("be/s") a server-state notice names (None: it names none)."""
    found = _NAMED.search(text)
    return None if found is None else found[1] or found[2]


def backend_key(server: str) -> str:
    """The key of the backend of a server ("be/s" -> "backend be")."""
    return f"backend {server.partition('/')[0]}"


@dataclass
class _Seen:
    since: float  # its window's start
    relayed: int  # lines relayed in its window
    state: str  # the state last relayed
    held: str | None = None  # its last line held back since the last summary
    held_state: str = ""
    held_at: float = 0.0
    held_seq: int = 0  # (HAProxy's order among lines held at the same time)


class Transitions:
    """Which transition lines are relayed, which are held back and counted."""

    def __init__(
        self, window: float = CHECK_WINDOW, samples: int = 3, settle: float = SETTLE
    ) -> None:
        self.window = window
        self.settle = settle
        self._seq = 0
        self._keep = samples
        self._seen: dict[str, _Seen] = {}
        self._next_prune = 0.0
        self.kinds: Counter[str] = Counter()
        self.samples: list[str] = []
        self._held: set[str] = set()  # keys with a line held back since the last summary

    def offer(self, found: Transition, text: str, now: float) -> bool:
        """True: relay the line now; False: it is counted (the first such since the last
        summary when ``self.kinds`` had nothing before)."""
        if found.kind == "check_up":
            self.came_up(found.key)
        seen = self._seen.get(found.key)
        if seen is None or now - seen.since >= self.window:
            self._prune(now)
            self._seen[found.key] = _Seen(now, 1, found.state)
            return True
        if seen.relayed < found.burst:
            seen.relayed += 1
            seen.state, seen.held = found.state, None
            return True
        self.kinds[found.kind] += 1
        if len(self.samples) < self._keep:
            self.samples.append(text)
        self._seq += 1
        seen.held, seen.held_state, seen.held_at = text, found.state, now
        seen.held_seq = self._seq
        self._held.add(found.key)
        return False

    def came_up(self, server: str) -> None:
        """A server of a backend is UP (a check, leaving maintenance or drain): the
        backend's held "no server available" is no longer true (it stays counted)."""
        seen = self._seen.get(backend_key(server))
        if seen is not None:
            seen.held = None

    def forget(self, server: str) -> None:
        """A server put in maintenance (or added anew): what its check said before is no
        more its state (it stays counted); the next line held of it is relayed once settled."""
        seen = self._seen.get(server)
        if seen is not None:
            seen.held, seen.state = None, ""

    def next_settle(self) -> float | None:
        """When the next held-back line settles (None: nothing is held)."""
        due = [s.held_at for s in self._seen.values() if s.held is not None]
        return min(due) + self.settle if due else None

    def settled(self, now: float, every: bool = False) -> list[tuple[str, float]]:
        """The held-back lines that stood SETTLE seconds (``every``: all, HAProxy ended),
        in HAProxy's order, with how long they were held: a server's when its state is not
        the one last relayed, a backend's alert always (a server coming UP dropped it)."""
        ready = sorted(
            (s.held_seq, key)
            for key, s in self._seen.items()
            if s.held is not None and (every or now - s.held_at >= self.settle)
        )
        relay: list[tuple[str, float]] = []
        for _, key in ready:
            seen = self._seen[key]
            if seen.held is not None and (not seen.held_state or seen.held_state != seen.state):
                relay.append((seen.held, round(now - seen.held_at, 1)))
                seen.state = seen.held_state
            seen.held = None
        return relay

    def take(self, now: float) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
        """The lines to relay now, with how long they were held: each server's last
        transition held back whose state is not the one last relayed; and the summary's
        fields (None: nothing counted). Then counting starts anew."""
        current: list[tuple[str, float]] = []
        for key in sorted(self._held):
            seen = self._seen.get(key)
            if seen is None or seen.held is None or not seen.held_state:
                continue  # (a newer line of it was relayed since; a backend's alert settles)
            if seen.held_state != seen.state:
                current.append((seen.held, round(now - seen.held_at, 1)))
                seen.state = seen.held_state
            seen.held = None
        fields = None
        if self.kinds:
            fields = {
                "notices": sum(self.kinds.values()),
                "kinds": dict(sorted(self.kinds.items())),
                "samples": self.samples,
                "flapping": len(self._held),
            }
        self.kinds, self.samples, self._held = Counter(), [], set()
        return current, fields

    def _prune(self, now: float) -> None:
        """Forget the servers whose window ended with nothing held (servers come and go: the
        table would grow with every one that ever changed state)."""
        if now < self._next_prune:
            return
        self._next_prune = now + self.window
        for key in [k for k, s in self._seen.items() if now - s.since >= self.window]:
            if self._seen[key].held is None:
                del self._seen[key]
