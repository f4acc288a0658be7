"""The cycle collector during synapse's start and around its first hand-over.

A cold start of 1,000 services x 20 servers builds about a million objects that all live
on (config models, registrations, selections; then the first apply's rendered services;
HAProxy's 20,000 running servers are read after it, in the background), and makes almost
no cyclic garbage. With CPython's default thresholds (700, 10, 10) the collector ran ~500 times
during that start and walked the whole heap 4 times: ~0.6-0.85 s of a 4 s start. One
full collection (223 ms) also fell inside the first apply's then whole read of HAProxy,
right when HAProxy already served: a change arriving then waited for it.

So, once per process:

- ``relax()`` (when the process starts): the youngest generation is collected every
  ``START_GEN0`` allocations and full collections stay off;
- ``first_apply()`` (around every hand-over, acting on the first): what the start built
  is frozen (``gc.freeze``: out of the collector's reach) before the apply, the collector
  is off during it, and after it what the apply built is frozen and the thresholds from
  before ``relax()`` come back (``settle()``);
- ``settle()`` also runs ``START_LIMIT_S`` after the start should no hand-over come
  (the registry down).

Frozen objects are still freed by reference counting when they go; only cycles among
them wait (a full collect at settle found 37 cyclic-garbage objects at 1,000 x 20).
Later collections walk only what changes create, and never inside a round
(``synapse.change_gate.collector_held``: the collection that was due runs after it).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

START_GEN0 = 100_000  # allocations between collections of the youngest generation
START_LIMIT_S = 60.0

_saved: tuple[int, int, int] | None = None
_settled = False
_done = False  # the first hand-over has run


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


@contextlib.contextmanager
def first_apply() -> Iterator[None]:
    """Around every hand-over; acts only around the first one of the process."""
    global _done
    if _done:
        yield
        return
    _done = True
    gc.freeze()  # the start's objects
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        gc.freeze()  # the first apply's objects (even if the timer settled before it)
        settle()  # the start is over: the process's thresholds back
