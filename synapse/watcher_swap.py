"""Each service's watcher, and the one replacing it after a SIGHUP (make before break).

When a service's discovery changes (a credential, endpoints, a path, ZooKeeper -> etcd),
the new watcher starts beside the running one, which keeps reporting until the new one's
first complete report. That report replaces the service's servers as a whole, and the old
watcher is stopped. Stopping the old one first froze the service whenever the new one
could not read: a refused credential (kazoo never retries one) kept a withdrawn instance
in HAProxy until the next SIGHUP.

A partial report (a ``multi`` union before every child answered, a Docker watcher before
every engine did) completes the swap too when every child new or changed in the new union
has answered: the silent ones are the running union's as well. Otherwise the latest one
completes it once ``patience`` ran out: a union with a child that never answers sends no
other, and following the old source would never apply the change. The reconciler's
partial-report holds (synapse.reload_diff.Holds) keep what no answered child lists.

A new watcher with no report to swap after ``patience`` seconds is said once
(``watcher_swap_stalled``, with its error) and shown under ``replacing`` in /status; the
service follows its old source meanwhile. Only a SIGHUP (``sighup``) starts a stalled one
afresh: a docker_services change applies the config too, and would reconnect it on every
container event. Reports are routed by watcher identity: a replaced or dropped watcher's
late reports reach nobody. A waiting watcher's values stay out of the service's gauges
(``Watcher.hide_gauges``) until it takes over.

A new watcher's list that gives the service no server (nothing at the path or prefix, or
every record dropped by its label_filters) does not complete the swap while the running
watcher's list has servers: a typo that still loads must not empty a serving backend
(with ``use_previous_backends`` it froze it: an instance withdrawn meanwhile kept its
traffic). "Serves" is the service's current selection (``serving``: what HAProxy is given,
a state file's or previous list included, as when the old watcher never read), or the old
watcher's latest list. The old watcher is followed on, the wait is said as a stall (with
why), /health lists it under ``degraded``, and the swap completes only at the new watcher's
first list with a server (or a SIGHUP that changes the discovery again, or the old lists'
lasting emptiness: below). An old list that empties meanwhile (every instance failing its
check for a second) goes to the reconciler under the config's rules (``use_previous_backends``;
past synapse.outgoing_hold's bound), the swap still held: completing it then committed the
typo for good, the instances' return unheard. Each report carries its watcher's label
filters (``Report.filters``): the running watcher's lists are selected with its own, not
with the SIGHUP's new ones, until the swap.

A hold ends too when the old watcher's lists have given no server for a continuous
``HOLD_BOTH_EMPTY_S`` (its instances all withdrawn: a deliberate move to an empty path, the
old discovery gone as well): nothing is kept by holding on, and the instances' return at the
old path would be served while the config names the new one. A timer, not a report, says
it (a ZooKeeper path that stays empty sends none); a briefer outage keeps the hold.

The running watcher's lists reach the reconciler through ``synapse.outgoing_hold``: from a
SIGHUP until the new watcher's list (bounded), one that empties the service is held, HAProxy
keeping the last list (a registry move: the nerves leave the old cluster first).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from smartstack.logs import event
from smartstack.modelbase import same_model
from synapse.config import ServiceConfig
from synapse.model import Report, Sink
from synapse.outgoing_hold import OutgoingHold
from synapse.selection import no_server_reason
from synapse.watchers import Watcher

log = logging.getLogger("synapse.watcher_swap")

SWAP_PATIENCE = 10.0  # seconds a new watcher may take for its first report before it is said
HOLD_BOTH_EMPTY_S = 60.0  # a held swap completes once the old lists gave no server this long

Create = Callable[[str, ServiceConfig, Sink], Watcher]
Step = tuple[str, Callable[[], Awaitable[Any]]]
_SERVING = {
    True: "serving the previous discovery's servers",
    False: "following the previous discovery, whose list gives no server either",
}


@dataclass
class Swap:
    """A watcher started beside a service's running one, until its first complete report."""

    watcher: Watcher
    since: float  # time.time() of its start
    timer: asyncio.TimerHandle
    stalled: bool = False  # patience ran out (said once)
    partial: Report | None = None  # its latest partial report: the swap's, should it stall
    empty: str | None = None  # why its lists give no server (held: until one does)
    latest: Report | None = None  # its latest held list: the swap's when the old one's empties
    gone: asyncio.TimerHandle | None = None  # HOLD_BOTH_EMPTY_S after the old lists emptied
    started: float = field(default_factory=time.monotonic)  # (synapse.outgoing_hold's bound)


class ServiceWatchers:
    """The running watcher of every service (``active``), the ones replacing them
    (``pending``) and the replaced ones still stopping."""

    def __init__(
        self,
        create: Create,
        sink: Sink,
        patience: float = SWAP_PATIENCE,
        serving: Callable[[str], bool] | None = None,
        held: Callable[[str], None] | None = None,
    ) -> None:
        self.active: dict[str, Watcher] = {}
        self.pending: dict[str, Swap] = {}
        self._create = create
        self._sink = sink  # the reconciler's
        self.patience = patience
        self._retiring: dict[asyncio.Task[None], str] = {}
        self._sighup = False  # the next drop is a SIGHUP's: stalled replacements start afresh
        self._lists: dict[str, Report] = {}  # each running watcher's latest report
        self._empty_since: dict[str, float] = {}  # loop time its lists began giving no server
        # whether a service's current selection has a server (the reconciler's view)
        self._serving = serving or (lambda name: False)
        # a hold began: the state file must say ``held_for`` now (a kill -9 restarts from it)
        self._on_held = held or (lambda name: None)
        # the running watchers' lists: one that loses a server waits while a swap may come
        self.hold = OutgoingHold(sink, self._pending_since)

    async def start(self, name: str, service: ServiceConfig) -> None:
        """The watcher of a service that has none (at the start, or a SIGHUP added it)."""
        watcher = self._new(name, service)
        self.active[name] = watcher
        await watcher.start()

    def sighup(self) -> None:
        """The config is being re-read: the next ``drop`` starts stalled replacements afresh."""
        self._sighup = True

    def drop(self, services: Mapping[str, ServiceConfig]) -> list[Watcher]:
        """The watchers no longer wanted by ``services`` (an applied config): those of removed
        services and replacements of another discovery. Taken out at once, without a wait, so
        none of their reports counts from here on; the caller stops them."""
        retry, self._sighup = self._sighup, False
        dropped = []
        for name in [n for n in self.active if n not in services]:
            dropped.append(self.active.pop(name))
            self._lists.pop(name, None)
            self._empty_since.pop(name, None)
            self.hold.forget(name)
        for name, swap in list(self.pending.items()):
            service = services.get(name)
            wanted = service is not None and same_model(swap.watcher.discovery, service.discovery)
            if not wanted or (swap.stalled and retry):  # (kazoo never retries a credential)
                dropped.append(self._unpend(name).watcher)
                self.hold.settle(name)  # (the running watcher's held list, if not reloading)
        return dropped

    async def follow(self, services: Mapping[str, ServiceConfig]) -> None:
        """Start what ``services`` need after ``drop``: a watcher for a new service, and one
        beside the running watcher of a service whose discovery changed."""
        for name, service in services.items():
            current = self.active.get(name)
            if current is None:
                await self.start(name, service)
            elif name not in self.pending and not same_model(current.discovery, service.discovery):
                watcher = self._new(name, service)
                watcher.hide_gauges()  # the running one's stay the service's
                timer = asyncio.get_running_loop().call_later(self.patience, self._stalled, name)
                self.pending[name] = Swap(watcher, time.time(), timer)
                await watcher.start()

    def _new(self, name: str, service: ServiceConfig) -> Watcher:
        watcher = self._create(name, service, self._sink)
        watcher.sink = functools.partial(self._route, watcher)  # reports name their watcher
        return watcher

    def _route(self, watcher: Watcher, report: Report) -> None:
        name = watcher.service
        # with its own filters: a SIGHUP's new ones must not empty the old watcher's lists
        report = replace(report, filters=watcher.discovery.label_filters)
        swap = self.pending.get(name)
        if self.active.get(name) is watcher:
            self._listed(name, report)  # (even empty: a held swap waits on, see the top)
            self.hold.offer(name, report)  # (not one that shrinks, while a swap may come)
            return
        if swap is None or swap.watcher is not watcher:
            return  # a replaced or dropped watcher's
        if report.partial and not swap.stalled and not _covers_change(self.active[name], watcher):
            swap.partial = report  # (the swap's, should the silent child stay silent)
            return
        swap.partial = None  # (this one is newer)
        if not self._held(name, swap, report):
            self._swap(name, report)

    def _pending_since(self, name: str) -> float | None:
        """A pending swap's start (synapse.outgoing_hold)."""
        swap = self.pending.get(name)
        return swap.started if swap is not None else None

    def _serves(self, name: str) -> bool:
        """Whether the service has a server now: its selection (a state file's too, while
        the running watcher never read), or the running watcher's latest list."""
        last = self._lists.get(name)
        listed = last is not None and no_server_reason(last.found, last.filters or ()) is None
        return listed or self._serving(name)

    def _held(self, name: str, swap: Swap, report: Report) -> bool:
        """Whether the swap waits: ``report`` gives no server, and the service had one at
        the first such list (once held, it stays so until a list gives one)."""
        reason = no_server_reason(report.found, report.filters or ())
        if reason is None or (swap.empty is None and not self._serves(name)):
            return False
        began, swap.empty, swap.latest = swap.empty is None, reason, report
        if began:
            event(log, "watcher_swap_held", service=name, reason=reason)
            self._on_held(name)  # (held_discovery answers from here on)
        self._arm(name)
        return True

    def _listed(self, name: str, report: Report) -> None:
        """The running watcher's latest list, and since when its lists give no server."""
        self._lists[name] = report
        if no_server_reason(report.found, report.filters or ()) is None:
            self._empty_since.pop(name, None)
        elif not report.partial:  # (a union's silent children's servers are held meanwhile)
            self._empty_since.setdefault(name, asyncio.get_running_loop().time())
        self._arm(name)

    def _arm(self, name: str) -> None:
        """A held swap's timer for the old lists' emptiness (cancelled when one lists again)."""
        swap = self.pending.get(name)
        if swap is None or swap.empty is None:
            return
        since = self._empty_since.get(name)
        if since is None:
            if swap.gone is not None:
                swap.gone.cancel()
                swap.gone = None
        elif swap.gone is None:
            loop = asyncio.get_running_loop()
            wait = max(0.0, since + HOLD_BOTH_EMPTY_S - loop.time())
            swap.gone = loop.call_later(wait, self._both_empty, name)

    def _both_empty(self, name: str) -> None:
        """HOLD_BOTH_EMPTY_S after the old lists emptied, while held: the swap completes."""
        swap = self.pending.get(name)
        if swap is None:
            return
        swap.gone = None
        since = self._empty_since.get(name)
        if swap.empty is None or swap.latest is None or since is None:
            return
        empty_s = asyncio.get_running_loop().time() - since
        if empty_s < HOLD_BOTH_EMPTY_S:  # (the timer ran early: armed for the rest)
            self._arm(name)
            return
        self._swap(name, swap.latest, previous_empty_s=round(empty_s, 1))

    def _swap(self, name: str, report: Report, **why: Any) -> None:
        swap = self._unpend(name)
        old, self.active[name] = self.active[name], swap.watcher
        old.hide_gauges()  # (until its stop, next)
        swap.watcher.publish_gauges()
        self._empty_since.pop(name, None)  # (the old watcher's)
        self._listed(name, report)
        event(log, "watcher_swapped", service=name, method=swap.watcher.method,
              replaced=old.method, after_s=round(time.time() - swap.since, 3),
              partial=report.partial, **({"held": swap.empty} if swap.empty else {}),
              **why)  # fmt: skip
        self.hold.swapped(name, report)  # the whole list: the old watcher's servers go at once
        task = asyncio.get_running_loop().create_task(old.stop(), name=f"unwatch-{name}")
        self._retiring[task] = name
        task.add_done_callback(self._retired)

    def _retired(self, task: asyncio.Task[None]) -> None:
        name = self._retiring.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("stopping the replaced watcher of %s failed", name, exc_info=task.exception())

    def _unpend(self, name: str) -> Swap:
        swap = self.pending.pop(name)
        swap.timer.cancel()
        if swap.gone is not None:
            swap.gone.cancel()
        return swap

    def _stalled(self, name: str) -> None:
        swap = self.pending.get(name)
        if swap is None:
            return
        partial = swap.partial  # a silent child's: the change applied, its servers held
        if partial is not None and not self._held(name, swap, partial):
            self._swap(name, partial)
            return
        swap.stalled = True
        watcher = swap.watcher
        event(log, "watcher_swap_stalled", level=logging.ERROR, service=name,
              method=watcher.method, waited_s=round(time.time() - swap.since, 1),
              error=swap.empty or watcher.last_error or "no complete report yet",
              keeping=f"{self.active[name].method} watcher of the previous config")  # fmt: skip

    def status(self) -> dict[str, dict[str, Any]]:
        """/status per service: the running watcher's, with ``replacing`` while a swap waits."""
        out: dict[str, dict[str, Any]] = {}
        for name, watcher in self.active.items():
            out[name] = watcher.status()
            swap = self.pending.get(name)
            if swap is not None:
                out[name]["replacing"] = {**swap.watcher.status(), "since": swap.since,
                                          "stalled": swap.stalled, "empty": swap.empty}  # fmt: skip
        return out

    def held_discovery(self, name: str) -> Any | None:
        """The discovery a held swap of ``name`` waits on (None: none; synapse.restart_held)."""
        swap = self.pending.get(name)
        return swap.watcher.discovery if swap is not None and swap.empty else None

    def degraded(self) -> list[str]:
        """For /health: the services following their old discovery because the new one
        gives them no server (said while the old one's list is empty too)."""
        return [f"{name}: {swap.empty}; {_SERVING[self._serves(name)]} since "
                f"{round(time.time() - swap.since, 1)} s"
                for name, swap in self.pending.items() if swap.empty]  # fmt: skip

    def stop_steps(self) -> list[Step]:
        """Everything to stop at the daemon's stop (each bounded by the caller): the running
        watchers, their replacements (taken out: no swap after it) and the replaced ones
        still stopping."""
        self.hold.stop()
        steps: list[Step] = [(f"watcher {n}", w.stop) for n, w in self.active.items()]
        for name in list(self.pending):
            steps.append((f"watcher {name} (replacing)", self._unpend(name).watcher.stop))
        for task, name in list(self._retiring.items()):  # (a bound's cancel ends it too)
            steps.append((f"watcher {name} (replaced)", functools.partial(_itself, task)))
        return steps


def _covers_change(old: Watcher, new: Watcher) -> bool:
    """Whether every child of the new union that the old one has not (new, or another
    discovery) has answered: a partial report then lacks only children both share."""
    children: dict[str, Watcher] = getattr(new, "children", None) or {}
    before = old.discovery.watchers or {}
    return bool(children) and all(
        name in children and children[name].reports > 0
        for name, child in (new.discovery.watchers or {}).items()
        if name not in before or not same_model(before[name], child)
    )


def _itself(task: asyncio.Task[None]) -> asyncio.Task[None]:
    return task
