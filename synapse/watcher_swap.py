"""Each service's watcher, and the one replacing it after a SIGHUP (make before break).

When a service's discovery changes (a credential, endpoints, a path, ZooKeeper -> etcd),
the new watcher starts beside the running one, which keeps reporting until the new one's
first complete report (a ``multi`` union's partial ones do not count). That report replaces
the service's servers as a whole, and the old watcher is stopped. Stopping the old one
first froze the service whenever the new one could not read: a refused credential (kazoo
never retries one) kept a withdrawn instance in HAProxy until the next SIGHUP.

A new watcher that has not reported after ``patience`` seconds is said once
(``watcher_swap_stalled``, with its error) and shown under ``replacing`` in /status; the
service follows its old source meanwhile. Reports are routed by watcher identity: a
replaced or dropped watcher's late reports reach nobody.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from smartstack.logs import event
from smartstack.modelbase import same_model
from synapse.config import ServiceConfig
from synapse.model import Report, Sink
from synapse.watchers import Watcher

log = logging.getLogger("synapse.watcher_swap")

SWAP_PATIENCE = 10.0  # seconds a new watcher may take for its first report before it is said

Create = Callable[[str, ServiceConfig, Sink], Watcher]
Step = tuple[str, Callable[[], Awaitable[Any]]]


@dataclass
class Swap:
    """A watcher started beside a service's running one, until its first complete report."""

    watcher: Watcher
    since: float  # time.time() of its start
    timer: asyncio.TimerHandle
    stalled: bool = False  # patience ran out (said once)


class ServiceWatchers:
    """The running watcher of every service (``active``), the ones replacing them
    (``pending``) and the replaced ones still stopping."""

    def __init__(self, create: Create, sink: Sink, patience: float = SWAP_PATIENCE) -> None:
        self.active: dict[str, Watcher] = {}
        self.pending: dict[str, Swap] = {}
        self._create = create
        self._sink = sink  # the reconciler's
        self.patience = patience
        self._retiring: dict[asyncio.Task[None], str] = {}

    async def start(self, name: str, service: ServiceConfig) -> None:
        """The watcher of a service that has none (at the start, or a SIGHUP added it)."""
        watcher = self._new(name, service)
        self.active[name] = watcher
        await watcher.start()

    def drop(self, services: Mapping[str, ServiceConfig]) -> list[Watcher]:
        """The watchers no longer wanted by ``services`` (a reloaded config): those of removed
        services and replacements of another discovery. Taken out at once, without a wait, so
        none of their reports counts from here on; the caller stops them."""
        dropped = []
        for name in [n for n in self.active if n not in services]:
            dropped.append(self.active.pop(name))
        for name, swap in list(self.pending.items()):
            service = services.get(name)
            wanted = service is not None and same_model(swap.watcher.discovery, service.discovery)
            if not wanted or swap.stalled:  # (stalled: tried afresh, kazoo never retries one)
                dropped.append(self._unpend(name).watcher)
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
                timer = asyncio.get_running_loop().call_later(self.patience, self._stalled, name)
                self.pending[name] = Swap(watcher, time.time(), timer)
                await watcher.start()

    def _new(self, name: str, service: ServiceConfig) -> Watcher:
        watcher = self._create(name, service, self._sink)
        watcher.sink = functools.partial(self._route, watcher)  # reports name their watcher
        return watcher

    def _route(self, watcher: Watcher, report: Report) -> None:
        name = watcher.service
        if self.active.get(name) is watcher:
            self._sink(report)
            return
        swap = self.pending.get(name)
        if swap is None or swap.watcher is not watcher or report.partial:
            return  # a replaced or dropped watcher's, or a replacement's before a full list
        self._unpend(name)
        old, self.active[name] = self.active[name], watcher
        event(log, "watcher_swapped", service=name, method=watcher.method,
              replaced=old.method, after_s=round(time.time() - swap.since, 3))  # fmt: skip
        self._sink(report)  # the whole list: the old watcher's servers are replaced at once
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
        return swap

    def _stalled(self, name: str) -> None:
        swap = self.pending.get(name)
        if swap is None:
            return
        swap.stalled = True
        watcher = swap.watcher
        event(log, "watcher_swap_stalled", level=logging.ERROR, service=name,
              method=watcher.method, waited_s=round(time.time() - swap.since, 1),
              error=watcher.last_error or "no complete report yet",
              keeping=f"{self.active[name].method} watcher of the previous config")  # fmt: skip

    def status(self) -> dict[str, dict[str, Any]]:
        """/status per service: the running watcher's, with ``replacing`` while a swap waits."""
        out: dict[str, dict[str, Any]] = {}
        for name, watcher in self.active.items():
            out[name] = watcher.status()
            swap = self.pending.get(name)
            if swap is not None:
                out[name]["replacing"] = {**swap.watcher.status(), "since": swap.since,
                                          "stalled": swap.stalled}  # fmt: skip
        return out

    def stop_steps(self) -> list[Step]:
        """Everything to stop at the daemon's stop (each bounded by the caller): the running
        watchers, their replacements (taken out: no swap after it) and the replaced ones
        still stopping."""
        steps: list[Step] = [(f"watcher {n}", w.stop) for n, w in self.active.items()]
        for name in list(self.pending):
            steps.append((f"watcher {name} (replacing)", self._unpend(name).watcher.stop))
        for task, name in list(self._retiring.items()):  # (a bound's cancel ends it too)
            steps.append((f"watcher {name} (replaced)", functools.partial(_itself, task)))
        return steps


def _itself(task: asyncio.Task[None]) -> asyncio.Task[None]:
    return task
