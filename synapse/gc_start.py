"""The cycle collector around synapse's first hand-over (its start).

A start builds a few hundred thousand long-lived objects (config, registrations,
selections; then the first apply's rendered services; HAProxy's 20,000 running servers
at 1,000 x 20 are read after it, in the background). A full (generation 2) collection
walks every tracked object: during the first apply one took 223 ms, in the middle of
the apply's then whole read of HAProxy (the part after HAProxy already serves), and a
change arriving then waited for it (a bench's first change after the start: 534-768 ms
instead of ~5 ms).

So, once per process: what the start built is frozen (``gc.freeze``: moved out of the
collector's reach) before the first apply, the collector is off during it, and what the
apply built is frozen after it. Frozen objects are still freed by reference counting when
they go; only cycles among them wait (none are expected to matter: the start's garbage
cycles are a one-time cost). Later collections walk only what changes create.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_done = False


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
        gc.freeze()  # the first apply's objects
        if enabled:
            gc.enable()
