"""Redis check: PING over a plain connection must answer +PONG (AUTH first if configured).

A few bytes of RESP by hand: no client library for one command.
"""

from __future__ import annotations

import asyncio

from nerve.checks.base import CheckFailed, Passed
from nerve.checks.resolve import open_stream
from nerve.checks.tcp import StreamCheck, close_writer


def command(*parts: str) -> bytes:
    """One RESP array of bulk strings."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> str:
    line = await reader.readline()
    if not line:
        raise CheckFailed("redis closed the connection")
    return line.decode(errors="replace").rstrip("\r\n")


class RedisCheck(StreamCheck):
    type = "redis"

    def __init__(
        self, name: str, host: str, port: int, timeout: float, password: str | None = None
    ) -> None:
        super().__init__(name, host, port, timeout)
        self.password = password

    async def probe(self) -> Passed:
        reader, writer = await open_stream(self.host, self.port)
        try:
            if self.password:
                writer.write(command("AUTH", self.password))
                await writer.drain()
                reply = await read_reply(reader)
                if reply != "+OK":
                    raise CheckFailed(f"redis AUTH answered {reply[:80]!r}")
            writer.write(command("PING"))
            await writer.drain()
            reply = await read_reply(reader)
            if reply != "+PONG":
                raise CheckFailed(f"redis PING answered {reply[:80]!r}")
            return Passed("PONG")
        finally:
            await close_writer(writer)
