"""Airbnb nerve's token bucket for status changes (``rate_limiting``).

``average_rate`` tokens per second refill the bucket, whole tokens at a time, up to
``max_burst``; every registration change consumes one. Pure: the caller passes the time.
"""

from __future__ import annotations

import math


class TokenBucket:
    def __init__(self, average_rate: float, max_burst: float, now: float) -> None:
        if average_rate <= 0 or max_burst < 1:
            raise ValueError("average_rate must be > 0 and max_burst >= 1")
        self.average_rate = average_rate
        self.max_burst = max_burst
        # Airbnb starts with `average_rate` tokens; we cap that at a full bucket and give
        # at least one, so a freshly started nerve is never throttled before its first
        # registration.
        self.tokens = max(1.0, min(average_rate, max_burst))
        self._last_refill = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._last_refill)
        whole = math.floor(self.average_rate * elapsed)
        if whole >= 1:
            # Only whole tokens move the refill mark, so fractions of a token accumulate.
            self.tokens = min(self.tokens + whole, self.max_burst)
            self._last_refill = now

    def consume(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
