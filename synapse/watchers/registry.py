"""Which watcher class serves which discovery method, and ``create_watcher``.

The table is filled by the package (``synapse/watchers/__init__.py`` imports every
method's module and registers it), so a watcher that builds other watchers (``multi``)
looks them up here without importing the package that imports it.
"""

from __future__ import annotations

from synapse.config import ServiceConfig
from synapse.model import Sink
from synapse.watchers.base import Watcher, WatcherContext

WATCHERS: dict[str, type[Watcher]] = {}  # discovery method -> watcher class
UNSUPPORTED = ""  # the key of the class for a method no module implements


def create_watcher(service: str, config: ServiceConfig, sink: Sink, ctx: WatcherContext) -> Watcher:
    """The watcher for the service's discovery method (the unsupported one when we have none)."""
    cls = WATCHERS.get(config.discovery.method) or WATCHERS[UNSUPPORTED]
    return cls(service, config, sink, ctx)
