"""TCP check: the port accepts a connection."""

from __future__ import annotations

import asyncio
import contextlib

from nerve.checks.base import BaseCheck, Passed
from nerve.checks.resolve import open_stream


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class TcpCheck(BaseCheck):
    type = "tcp"

    def __init__(self, name: str, host: str, port: int, timeout: float) -> None:
        super().__init__(name, timeout)
        self.host = host
        self.port = port

    async def probe(self) -> Passed:
        _, writer = await open_stream(self.host, self.port)
        await close_writer(writer)
        return Passed(f"connected to {self.host}:{self.port}")
