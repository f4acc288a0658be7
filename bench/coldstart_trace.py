"""`python -m bench.coldstart_trace FILE SYNAPSE_ARGS...`: synapse with wall-clock marks.

Runs ``synapse.cli.main(SYNAPSE_ARGS)`` after installing an import hook that wraps the
functions named in ``MARKS`` as their modules load: each call's entry and exit is
appended to FILE as ``<time.time()> <pid> > name`` / ``< name``, and ``report #N`` for
the reconciler's first, every 250th and last watcher report. Used by
``bench.coldstart_timeline``; a benchmark tool, not part of synapse (a name that is not
found, after a rename, is marked ``missing name`` in FILE instead of failing the run).
"""

from __future__ import annotations

import functools
import importlib.abc
import inspect
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

MARKS: dict[str, tuple[str, ...]] = {
    "synapse.config_child": ("ForkedValidation.__init__", "ForkedValidation.answer"),
    "synapse.daemon": ("SynapseDaemon.start",),
    "synapse.reconciler": ("Reconciler._select_all", "Reconciler._hand_over"),
    "synapse.haproxy.controller": ("HAProxyController._render", "HAProxyController._reload"),
    "synapse.haproxy.installer": ("Installer.install",),
    "synapse.haproxy.managed": ("ManagedHAProxy._refuse_taken_ports", "ManagedHAProxy.start"),
}
REPORT_EVERY = 250


class Marks:
    def __init__(self, path: str) -> None:
        self._out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
        self._lock = threading.Lock()

    def write(self, what: str) -> None:
        with self._lock:
            self._out.write(f"{time.time():.6f} {os.getpid()} {what}\n")

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def marked_async(*args: Any, **kwargs: Any) -> Any:
                self.write(f"> {name}")
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.write(f"< {name}")

            return marked_async

        @functools.wraps(fn)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self.write(f"> {name}")
            try:
                return fn(*args, **kwargs)
            finally:
                self.write(f"< {name}")

        return marked

    def patch(self, module: Any) -> None:
        for name in MARKS.get(module.__name__, ()):
            owner_name, _, attr = name.rpartition(".")
            owner = getattr(module, owner_name, None) if owner_name else module
            if owner is None or not hasattr(owner, attr):
                self.write(f"missing name {module.__name__}.{name}")
                continue
            setattr(owner, attr, self.wrap(name, getattr(owner, attr)))
        if module.__name__ == "synapse.reconciler":
            self._count_reports(module.Reconciler)

    def _count_reports(self, cls: Any) -> None:
        original, seen = cls.report, [0]

        def report(reconciler: Any, found: Any) -> None:
            seen[0] += 1
            if seen[0] == 1 or seen[0] % REPORT_EVERY == 0 or seen[0] == len(reconciler._services):
                self.write(f"= report #{seen[0]}")
            original(reconciler, found)

        cls.report = report


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the marked modules through the other finders and patches them once loaded."""

    def __init__(self, marks: Marks) -> None:
        self.marks = marks

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in MARKS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                loader, original = spec.loader, spec.loader.exec_module

                def exec_module(module: Any, original: Callable[..., Any] = original) -> None:
                    original(module)
                    self.marks.patch(module)

                loader.exec_module = exec_module  # type: ignore[method-assign]
                return spec
        return None


def main(argv: list[str]) -> int:
    marks = Marks(argv[0])
    marks.write("= traced")
    sys.meta_path.insert(0, _Finder(marks))
    from synapse.cli import main as synapse_main

    return synapse_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
