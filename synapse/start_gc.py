"""The cycle collector during a start (issue 15).

A cold start of 1,000 services x 20 servers allocates about a million objects that all
live on (config models, records, servers, the desired state, the rendered config).
With CPython's default thresholds (700, 10, 10) the collector ran ~500 times during
that start and walked the whole heap 4 times: ~0.6 s of a 4 s start, for almost no
garbage (a start makes few cycles). ``relax()``, when the process starts, makes the
youngest generation collect every ``START_GEN0`` allocations instead and keeps the
full collections off; ``settle()`` gives the process its thresholds back and freezes
what exists (it lives on, and a full collection walking it stalls a change: ~100 ms at
20,000 servers). The reconciler settles after its first hand-over; the daemon also
settles ``START_LIMIT_S`` after starting, should no hand-over come (registry down).
"""

from __future__ import annotations

import gc

START_GEN0 = 100_000  # allocations between collections of the youngest generation
START_LIMIT_S = 60.0

_saved: tuple[int, int, int] | None = None
_settled = False


def relax() -> None:
    """Collect rarely until ``settle()`` (once per process)."""
    global _saved
    if _saved is None and not _settled:
        _saved = gc.get_threshold()
        gc.set_threshold(START_GEN0, 1000, 1000)


def freeze_loaded() -> None:
    """Modules and the loaded config live as long as the process: out of every walk."""
    gc.freeze()


def settle() -> None:
    """The thresholds from before ``relax()`` and what exists frozen (once per process)."""
    global _saved, _settled
    if _settled:
        return
    _settled = True
    if _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
    gc.freeze()
