"""TCP check: the port accepts a connection."""

from __future__ import annotations

import asyncio

from nerve.checks.base import BaseCheck, Passed
from nerve.checks.resolve import open_stream


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close, not waiting for it: the verdict is in (as HTTP's ``ServiceExchange.close``).
    Awaited, a loop running late cut a healthy Redis or RabbitMQ check, its PONG read, as
    a timeout; the transport still closes the socket on the loop's next turn."""
    writer.close()


class StreamCheck(BaseCheck):
    """A check that talks to ``host``:``port`` over TCP (tcp, redis, rabbitmq)."""

    def __init__(self, name: str, host: str, port: int, timeout: float) -> None:
        super().__init__(name, timeout)
        self.host = host
        self.port = port


class TcpCheck(StreamCheck):
    type = "tcp"

    async def probe(self) -> Passed:
        _, writer = await open_stream(self.host, self.port)
        await close_writer(writer)
        return Passed(f"connected to {self.host}:{self.port}")
