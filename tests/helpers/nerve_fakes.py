"""A reporter that only records what its service decides: for unit tests of nerve's
service logic (no registry, no I/O)."""

from __future__ import annotations

import asyncio

from nerve.reporters.base import Reporter
from smartstack.record import Registration


class Recorder(Reporter):
    """Records the service's decisions; never started, never writes."""

    kind = "recorder"

    def __init__(self) -> None:
        super().__init__("web", Registration("10.0.0.5", 8080, "web-1"))
        self.decisions: list[bool] = []
        self.decided_at: list[float] = []  # loop time of each decision

    def set_registered(self, wanted: bool) -> None:
        self.decisions.append(wanted)
        self.decided_at.append(asyncio.get_running_loop().time())
        super().set_registered(wanted)

    def _attach(self) -> None:
        pass

    def _detach(self) -> None:
        pass

    async def _register(self) -> bool:
        return True

    async def _withdraw(self) -> bool:
        return True
