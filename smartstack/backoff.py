"""Capped exponential backoff with full jitter: shared by the daemons' retry loops."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with full jitter (a fleet must not retry in lockstep)."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(cap, base)
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 32)
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def spread(window: float) -> float:
    """A delay in [0, window]: what many clients do at the same instant (the registry came
    back) is spread over `window` instead of arriving as one burst."""
    return random.uniform(0.0, window) if window > 0 else 0.0
