"""noop check: always up (Airbnb's placeholder for services that need no check)."""

from __future__ import annotations

from nerve.checks.base import BaseCheck, Passed


class NoopCheck(BaseCheck):
    type = "noop"

    async def probe(self) -> Passed:
        return Passed("noop")
