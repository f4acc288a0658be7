"""Lost etcd watches, logged per connection: the services of one etcd connection lose
their watches together when it goes down (200 services: 200 ``etcd_watch_lost`` lines at
once, a reminder each every 5 minutes, 200 ``etcd_watch_restored`` on its return).

Their failures are gathered for ``GATHER`` seconds and logged as one line with how many
watchers they concern, a few of their names and the latest error; a new kind of error is
logged once per outage, a reminder every ``REMIND_EVERY`` seconds. The watchers come back
spread over ``relist_jitter`` once the connection answers again (smartstack.etcd_wake), or
over their jittered backoff (up to ``max_interval``, a minute): the first return after a
lost line is logged, the others when all are back (or with the next lost line).
A watcher stopped while lost (its service removed by a SIGHUP) is counted as ``removed``:
the outage's last line still says that none is lost.
Which services are without a watch, and why, is in each watcher's ``/status``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from smartstack.logs import event

log = logging.getLogger("synapse.watchers.etcd")

GATHER = 1.0  # seconds: the watchers of a connection fail (and come back) within this
REMIND_EVERY = 300.0
NAMES = 5  # service names a line carries (the count says how many more)

Later = Callable[[float, Callable[[], None]], Any]


def _names(services: list[str]) -> str:
    shown = ",".join(sorted(services)[:NAMES])
    return shown if len(services) <= NAMES else f"{shown},..."


class WatchOutage:
    """The lost watches of one etcd connection. ``failure``/``success``: a watcher's watch
    failed / runs again (``owner``: the watcher, so that a replaced one's news do not mix
    with its successor's); ``forget``: a stopped watcher."""

    def __init__(
        self,
        endpoints: list[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        later: Later | None = None,
    ) -> None:
        self.endpoints = ",".join(endpoints)
        self.clock = clock
        self._later = later
        self.lost: dict[object, tuple[str, float]] = {}  # owner -> (service, since)
        self.failures = 0  # failed attempts of the outage, all watchers
        self._new: list[str] = []  # lost since the last line
        self._back: list[float] = []  # restored since the last line: seconds each was lost
        self._kinds: set[str] = set()  # kinds of error logged during the outage
        self._error = ""
        self._remind = False
        self._logged_at = 0.0
        self._back_said = False  # a return logged since the last lost line
        self._removed = 0  # watchers stopped while lost, not yet said
        self._pending: object | None = None  # the flush scheduled (a token), if any

    def failure(self, owner: object, service: str, error: str) -> None:
        if not self.lost and self._pending is not None:
            # The last outage's end is still being gathered: said first, so that this
            # failure starts a new outage (its own count) rather than joining the old one.
            self.flush()
        now = self.clock()
        self.failures += 1
        self._error = error
        if owner not in self.lost:
            self.lost[owner] = (service, now)
            self._new.append(service)
        kind = error.split(":", 1)[0]
        if kind not in self._kinds:
            self._kinds.add(kind)
            self._remind = True  # a new kind of error: said again
        elif now - self._logged_at >= REMIND_EVERY:
            self._remind = True
        if self._new or self._remind:
            self._schedule()

    def success(self, owner: object) -> None:
        lost = self.lost.pop(owner, None)
        if lost is not None:
            self._back.append(round(self.clock() - lost[1], 1))
            self._schedule()

    def forget(self, owner: object) -> None:
        """A stopped watcher: neither lost nor to be restored."""
        if self.lost.pop(owner, None) is not None:
            self._removed += 1
            if not self.lost:
                self._schedule()  # the returns held back are said, and the outage ends

    def _schedule(self) -> None:
        if self._pending is None:
            token = self._pending = object()
            later = self._later or asyncio.get_running_loop().call_later
            later(GATHER, lambda: self._due(token))

    def _due(self, token: object) -> None:
        if self._pending is token:  # not flushed (by a new outage's failure) meanwhile
            self.flush()

    def flush(self) -> None:
        """Log what was gathered: newly lost watches (or a reminder), then restored ones."""
        self._pending = None
        if self._new or self._remind:
            names = self._new or [service for service, _ in self.lost.values()]
            event(log, "etcd_watch_lost", level=logging.WARNING, endpoints=self.endpoints,
                  new=len(self._new), lost=len(self.lost), services=_names(names),
                  error=self._error, failures=self.failures)  # fmt: skip
            self._new, self._remind, self._logged_at = [], False, self.clock()
            self._back_said = False
        ended = not self.lost and (self._back or self._removed)
        if ended or (self._back and not self._back_said):
            event(log, "etcd_watch_restored", endpoints=self.endpoints, watchers=len(self._back),
                  lost=len(self.lost), removed=self._removed, failures=self.failures,
                  seconds=max(self._back, default=0.0))  # fmt: skip
            self._back, self._back_said, self._removed = [], True, 0
        if not self.lost:
            self._reset()

    def _reset(self) -> None:
        """The outage is over: the next failure starts a new one."""
        self.failures, self._kinds, self._logged_at, self._back_said = 0, set(), 0.0, False
        self._removed = 0


_outages: weakref.WeakKeyDictionary[object, WatchOutage] = weakref.WeakKeyDictionary()


def outage_of(conn: Any) -> WatchOutage:
    """The one ``WatchOutage`` of a (shared) etcd connection."""
    found = _outages.get(conn)
    if found is None:
        found = _outages[conn] = WatchOutage(list(conn.endpoints))
    return found
