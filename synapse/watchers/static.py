"""Watchers without a registry: ``base`` (only default_servers) and unsupported methods.

Both report an empty discovery once, so the service runs on its ``default_servers``.
An unsupported method (ec2tag, marathon) logs one error and keeps its
service on the defaults; every other service is unaffected.
"""

from __future__ import annotations

import logging
import time

from smartstack.logs import event
from synapse.watchers.base import Watcher

log = logging.getLogger("synapse.watchers")


class BaseWatcher(Watcher):
    method = "base"

    async def run(self) -> None:
        self.set_connected(True)
        self.report([], 0, time.monotonic())


class UnsupportedWatcher(Watcher):
    method = "unsupported"

    async def run(self) -> None:
        requested = self.discovery.method
        self.set_connected(False, f"discovery method {requested!r} is not supported")
        event(log, "discovery_method_unsupported", level=logging.ERROR, service=self.service,
              method=requested, using="default_servers")  # fmt: skip
        self.report([], 0, time.monotonic())

    def status(self) -> dict:
        return {**super().status(), "method": self.discovery.method}
