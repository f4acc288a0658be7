"""Holding back the repeats of HAProxy's health-check transitions (pure: no clock, no I/O).

A server whose check flaps prints "Server be/s is DOWN, reason: ..." and "... is UP, reason:
..." (and its backend "[ALERT] ... backend 'be' has no server available!") at every
transition: ~90 lines a minute per server flapping every second. The first lines of a
server (or backend) in a window are relayed at once, as any line (an operator sees a server
go down when it does); its repeats within the window are counted into one summary per
window, and at the summary the server's last transition is relayed too when it is not the
state last relayed (the log's last word on a server is its current state).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

CHECK_WINDOW = 30.0  # seconds: a server's (or backend's) window, and the summary's interval
SERVER_BURST = 2  # a server's lines relayed per window: a single bounce shows DOWN and UP
BACKEND_BURST = 1  # a backend's "no server available" relayed per window

# HAProxy 2.6 (server.c): "%sServer %s/%s is DOWN" / "is UP" then srv_append_status's
# ", reason: ...", " via be/s" (a tracked server) or ". N active and ..."; "%sServer" is
# "Backup Server" for a backup. "CLI : Server ..." lines (runtime commands) are not checks.
_CHECK = re.compile(r"\[WARNING\] +\(\d+\) : (?:Backup )?Server (\S+) is (UP|DOWN)(?:, | via |\. )")
_NO_SERVER = re.compile(r"\[ALERT\] +\(\d+\) : \S+ '?([^' ]+?)'? has no server available!")


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


@dataclass
class _Seen:
    since: float  # its window's start
    relayed: int  # lines relayed in its window
    state: str  # the state last relayed
    held: str | None = None  # its last line held back since the last summary
    held_state: str = ""
    held_at: float = 0.0


class Transitions:
    """Which transition lines are relayed, which are held back and counted."""

    def __init__(self, window: float = CHECK_WINDOW, samples: int = 3) -> None:
        self.window = window
        self._keep = samples
        self._seen: dict[str, _Seen] = {}
        self._next_prune = 0.0
        self.kinds: Counter[str] = Counter()
        self.samples: list[str] = []
        self._held: set[str] = set()  # keys with a line held back since the last summary

    def offer(self, found: Transition, text: str, now: float) -> bool:
        """True: relay the line now; False: it is counted (the first such since the last
        summary when ``self.kinds`` had nothing before)."""
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
        seen.held, seen.held_state, seen.held_at = text, found.state, now
        self._held.add(found.key)
        return False

    def take(self, now: float) -> tuple[list[tuple[str, float]], dict[str, Any] | None]:
        """The lines to relay now, with how long they were held: each server's last
        transition held back whose state is not the one last relayed; and the summary's
        fields (None: nothing counted). Then counting starts anew."""
        current: list[tuple[str, float]] = []
        for key in sorted(self._held):
            seen = self._seen.get(key)
            if seen is None or seen.held is None:
                continue  # (a newer line of it was relayed since)
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
