"""While a service's discovery is being replaced, its outgoing watcher's lists do not empty
what HAProxy serves (make before break across a registry move).

A registry migration under traffic (every nerve and synapse SIGHUPed at once onto a new
cluster) has the nerves withdraw from the old cluster while synapse still reads the file,
or before the new watcher's first list: the old watcher's emptied list was applied, and
``use_previous_backends: false`` emptied the backend until the new list came (review s35:
4 of 471 requests 503; s36: 20 of 3,138 over 6 moves, now 0). That setting asks for an
empty list to be applied; not for the list of a discovery being replaced, whose instances
are moving, not gone.

A service is guarded from a SIGHUP until its config is applied (every service: which
discovery changes is unknown before the file is read), and, when its discovery changed,
until the new watcher's list takes over (``synapse.watcher_swap``). A running watcher's
list that gives no server where the last list given gave some is held meanwhile
(``outgoing_list_held``): HAProxy keeps that list. A list that still gives a server passes
(and ends a hold: it is newer), a withdrawal within ``SHRINK_FOLD_S`` (review s22: a
withdrawn instance kept its traffic; the fold: one change read as several lists), and the
servers left take the load (slower, not failing); only an emptied backend fails requests.
The held list is given when the guard ends without a swap (the discovery did not change, the
reload failed, the swap was dropped), or ``OUTGOING_HOLD_S`` after the SIGHUP, or after the
swap's start once there is one (a new watcher that cannot read, or lists nothing: a real
withdrawal waits no longer); a swap drops it, the new watcher's list replacing both
(``outgoing_list_released`` says which).
Steady discovery keeps ``use_previous_backends`` as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from smartstack.logs import event
from synapse.model import Report, Sink
from synapse.selection import labels_match

log = logging.getLogger("synapse.outgoing_hold")

OUTGOING_HOLD_S = 10.0  # seconds from the SIGHUP, then from the swap's start, a list may wait
# A guarded shrink waits this long for an emptied list behind it: one registry change can
# reach synapse as several lists ({a, b} -> {b} -> none from one ZooKeeper transaction),
# and the reconciler, which keeps only the latest list, folded them; given apart, {b} alone
# was applied and use_previous_backends kept 1 server of 2 (round 36's CI).
SHRINK_FOLD_S = 0.05

Key = tuple[str, int]


@dataclass
class _Held:
    report: Report  # the running watcher's latest list, not given yet
    since: float  # time.monotonic() of the first held list
    timer: asyncio.TimerHandle


def gives_server(report: Report) -> bool:
    """Whether a list gives its service a server (a record that passes its label filters):
    stops at the first one, where ``servers_of`` builds the whole set (every report)."""
    filters = report.filters or ()
    return any(labels_match(f.registration.labels, filters) for f in report.found)


def servers_of(report: Report) -> frozenset[Key]:
    """The servers a list gives its service (its records that pass its label filters)."""
    filters = report.filters
    if not filters:  # (no label to match: ~2.5x cheaper per record)
        return frozenset((f.registration.host, f.registration.port) for f in report.found)
    return frozenset((f.registration.host, f.registration.port) for f in report.found
                     if labels_match(f.registration.labels, filters))  # fmt: skip


def _drop(waiting: dict[str, _Held], name: str) -> _Held | None:
    """Take ``name``'s waiting list out of ``waiting``, its timer cancelled."""
    entry = waiting.pop(name, None)
    if entry is not None:
        entry.timer.cancel()
    return entry


class OutgoingHold:
    """Between the running watchers and the reconciler's sink. ``replacing(name)``: the
    time.monotonic() a pending swap of ``name`` began; None: no swap."""

    def __init__(
        self,
        sink: Sink,
        replacing: Callable[[str], float | None],
        bound: float = OUTGOING_HOLD_S,
    ) -> None:
        self._sink = sink
        self._replacing = replacing
        self.bound = bound
        self._reloads = 0  # SIGHUP reloads begun and not ended
        self._reload_since: float | None = None  # time.monotonic(): a clock step moves no bound
        self._given: dict[str, bool] = {}  # whether the last list given gave a server
        self._last: dict[str, Report] = {}  # the last list given (its servers, for the log)
        self._held: dict[str, _Held] = {}
        self._folding: dict[str, _Held] = {}  # guarded shrinks waiting SHRINK_FOLD_S

    def reload_begins(self) -> None:
        """A SIGHUP: every service is guarded until ``reload_ends``."""
        if self._reloads == 0:
            self._reload_since = time.monotonic()
        self._reloads += 1

    def during(self, reload: asyncio.Task[Any]) -> None:
        """A SIGHUP's reload task: every service is guarded until it is done."""
        self.reload_begins()
        # (cancelled: the daemon stops; its held lists are not given, whose timers stop() ends)
        reload.add_done_callback(lambda task: self.reload_ends(settle=not task.cancelled()))

    def reload_ends(self, settle: bool = True) -> None:
        """The SIGHUP's config is applied (or refused): unchanged services' held lists go."""
        self._reloads = max(0, self._reloads - 1)
        if self._reloads == 0:
            self._reload_since = None
            for name in list(self._held) if settle else ():
                self.settle(name)

    def offer(self, name: str, report: Report) -> None:
        """The running watcher's list: held if guarded and it empties the service, else given."""
        began = self._guarded_since(name)  # (steady: one dict look-up, no server read)
        if began is None or report.partial or time.monotonic() - began >= self.bound \
                or not self._given.get(name):  # fmt: skip
            self._give(name, report, "newer list")
            return
        if gives_server(report):
            if servers_of(report) < servers_of(self._last[name]):  # withdrawals only: given
                self._fold(name, report)  # within SHRINK_FOLD_S, unless an emptied list follows
            else:  # (a server added comes at once, with what left beside it)
                self._give(name, report, "newer list")
            return
        _drop(self._folding, name)  # (a withdrawal folded into this list: held with it)
        held = self._held.get(name)
        if held is not None:
            held.report = report
            return
        wait = max(0.0, began + self.bound - time.monotonic())
        timer = asyncio.get_running_loop().call_later(wait, self._expired, name)
        self._held[name] = _Held(report, time.monotonic(), timer)
        event(log, "outgoing_list_held", service=name, servers=len(servers_of(self._last[name])),
              reason=self._why(name))  # fmt: skip

    def _fold(self, name: str, report: Report) -> None:
        folding = self._folding.get(name)
        if folding is not None:  # (a burst: given SHRINK_FOLD_S after its first list)
            folding.report = report
            return
        timer = asyncio.get_running_loop().call_later(SHRINK_FOLD_S, self._folded, name)
        self._folding[name] = _Held(report, time.monotonic(), timer)

    def _folded(self, name: str) -> None:
        folding = self._folding.pop(name, None)
        if folding is not None:
            self._give(name, folding.report, "newer list")

    def swapped(self, name: str, report: Report) -> None:
        """The new watcher's list replaces the service's (a held old list is dropped)."""
        self._give(name, report, "swapped")

    def settle(self, name: str) -> None:
        """A guard may have ended (a swap dropped, a reload applied): the held list goes."""
        held = self._held.get(name)
        if held is not None and self._guarded_since(name) is None:
            self._give(name, self._newest(name, held), "discovery kept")

    def forget(self, name: str) -> None:
        """The service is gone from the config."""
        self._given.pop(name, None)
        self._last.pop(name, None)
        _drop(self._folding, name)
        _drop(self._held, name)

    def stop(self) -> None:
        """The daemon stops: no held list is given after it."""
        for waiting in (self._folding, self._held):
            for name in list(waiting):
                _drop(waiting, name)

    def _expired(self, name: str) -> None:
        held = self._held.get(name)
        if held is None:
            return
        began = self._guarded_since(name)
        left = 0.0 if began is None else began + self.bound - time.monotonic()
        if left > 0:  # (a swap began since: its own bound)
            held.timer = asyncio.get_running_loop().call_later(left, self._expired, name)
            return
        self._give(name, self._newest(name, held), "bound")

    def _newest(self, name: str, held: _Held) -> Report:
        """The list to give as a hold ends: a withdrawal folding behind the held empty list
        is newer (its list has a server again; given in the held one's place, not dropped)."""
        folding = self._folding.get(name)
        return folding.report if folding is not None else held.report

    def _give(self, name: str, report: Report, why: str) -> None:
        _drop(self._folding, name)
        held = _drop(self._held, name)
        if held is not None:
            event(log, "outgoing_list_released", level=logging.WARNING if why == "bound"
                  else logging.INFO, service=name, why=why,
                  held_s=round(time.monotonic() - held.since, 3))  # fmt: skip
        # (a partial list's silent children keep their servers: synapse.reload_diff.Holds)
        self._given[name] = gives_server(report) or (report.partial and name in self._given
                                                     and self._given[name])  # fmt: skip
        self._last[name] = report
        self._sink(report)

    def _guarded_since(self, name: str) -> float | None:
        """When the guard's bound began: the pending swap's start, else the SIGHUP's."""
        swap_since = self._replacing(name)
        return swap_since if swap_since is not None else self._reload_since

    def _why(self, name: str) -> str:
        if self._replacing(name) is not None:
            return "its discovery is being replaced"
        return "a SIGHUP's config is being read"
