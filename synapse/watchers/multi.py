"""Airbnb's ``multi`` watcher: several child watchers of one service, one resolved list.

Each child is an ordinary watcher (any method, built by ``create_watcher``) whose reports
come here instead of to the reconciler. The resolver decides what the service gets:

- ``sequential`` (``sequential_order``): the list of the first child, in that order, that
  is connected and has servers; when none has, the first child's (empty) list, so the
  service falls back to its default_servers / previous list as with one watcher.
- ``union``: every child's list together (the selection deduplicates by server name).

Generator settings read from a registry (synapse/generator_config.py) follow the same
choice: the chosen child's (sequential), the first child's that has some (union).

Nothing is reported before every child has answered once, unless a child already has
servers that the resolver would use, so a slow second registry does not flap the service
at startup. A union reported before every child answered is ``partial`` (Report.partial):
its servers are added at once, but those the service had (its previous list, the state
file's after a restart) that no child lists stay until every child answered or for
state_file_ttl, since they may be a silent child's (synapse.reload_diff.Holds).
Connection changes do not come as reports: the choice is also re-made every
RESOLVE_INTERVAL seconds (Ruby re-picks on its periodic ping).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from synapse.model import Found, Report, Sink
from synapse.watchers.base import Watcher
from synapse.watchers.registry import create_watcher

RESOLVE_INTERVAL = 2.0


class MultiWatcher(Watcher):
    method = "multi"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        assert self.discovery.watchers and self.discovery.resolver  # checked by the config
        self.resolver = self.discovery.resolver.method
        names = list(self.discovery.watchers)
        self.order = list(self.discovery.resolver.sequential_order or names)
        self.children: dict[str, Watcher] = {}
        self._reports: dict[str, Report] = {}
        self.chosen: str | None = None

    async def run(self) -> None:
        self._reports = {}
        for name, discovery in (self.discovery.watchers or {}).items():
            config = self.config.model_copy(update={"discovery": discovery})
            child = create_watcher(self.service, config, self._sink(name), self.ctx)
            self.children[name] = child
            await child.start()
        while True:
            await asyncio.sleep(RESOLVE_INTERVAL)
            self._resolve(time.monotonic())

    def _sink(self, name: str) -> Sink:
        def sink(report: Report) -> None:
            self._reports[name] = report
            self._resolve(report.event_time)

        return sink

    def _usable(self, name: str) -> bool:
        report = self._reports.get(name)
        return report is not None and bool(report.found) and self.children[name].connected

    def _resolve(self, event_time: float) -> None:
        everyone = all(name in self._reports for name in self.order)
        if self.resolver == "union":
            if not everyone and not any(self._usable(n) for n in self.order):
                return
            reports = [self._reports[n] for n in self.order if n in self._reports]
            found: list[Found] = [item for report in reports for item in report.found]
            self.set_connected(any(self.children[n].connected for n in self._reports))
            # Ruby: the first child's generator settings that are not empty
            settings = next((r.generator_config for r in reports if r.generator_config), {})
            self.generator_config = dict(settings)
            self.report(found, sum(r.skipped for r in reports), event_time, not everyone)
            return
        chosen = next((n for n in self.order if self._usable(n)), None)
        if chosen is None:
            if not everyone:
                return  # a later child may still have servers: wait for its first answer
            chosen = self.order[0]
        self.chosen = chosen
        self.set_connected(self.children[chosen].connected)
        report = self._reports[chosen]
        self.generator_config = dict(report.generator_config)
        self.report(report.found, report.skipped, event_time)

    async def close(self) -> None:
        children, self.children = self.children, {}
        for child in children.values():
            with contextlib.suppress(Exception):
                await child.stop()

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(
            resolver=self.resolver,
            chosen=self.chosen,
            watchers={name: child.status() for name, child in self.children.items()},
        )
        return out
