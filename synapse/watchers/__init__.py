"""Discovery watchers, one module per method, all feeding the reconciler (see base.py).

Each method's module is imported only when a service uses it (registry.py).
"""

from __future__ import annotations

from synapse.watchers.base import Watcher, WatcherContext
from synapse.watchers.registry import WATCHERS, create_watcher, watcher_class

__all__ = ["WATCHERS", "Watcher", "WatcherContext", "create_watcher", "watcher_class"]
