"""RabbitMQ check: send the AMQP 0-9-1 protocol header, expect a Connection.Start frame.

That proves the broker's listener is up and speaks AMQP without logging in (Airbnb's
check also opened a channel with ``username``/``password``; a broker that sends
Connection.Start is accepting connections, which is what routing traffic needs).
"""

from __future__ import annotations

import asyncio
import struct

from nerve.checks.base import CheckFailed, Passed
from nerve.checks.resolve import open_stream
from nerve.checks.tcp import StreamCheck, close_writer

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_END = 0xCE
CONNECTION_START = (10, 10)  # class id, method id


def parse_connection_start(header: bytes, payload: bytes) -> None:
    """Raise CheckFailed unless header+payload is a Connection.Start method frame."""
    if header.startswith(b"AMQP"):
        raise CheckFailed(f"broker refused the protocol version ({header!r})")
    frame_type, channel, _ = struct.unpack(">BHI", header)
    if frame_type != FRAME_METHOD or channel != 0:
        raise CheckFailed(f"unexpected AMQP frame type {frame_type} on channel {channel}")
    if len(payload) < 5 or payload[-1] != FRAME_END:
        raise CheckFailed("malformed AMQP frame")
    method = struct.unpack(">HH", payload[:4])
    if method != CONNECTION_START:
        raise CheckFailed(f"expected Connection.Start, got AMQP method {method}")


class RabbitMqCheck(StreamCheck):
    type = "rabbitmq"

    async def probe(self) -> Passed:
        reader, writer = await open_stream(self.host, self.port)
        try:
            writer.write(PROTOCOL_HEADER)
            await writer.drain()
            header = await reader.readexactly(7)
            if header.startswith(b"AMQP"):
                parse_connection_start(header, b"")
            size = struct.unpack(">I", header[3:])[0]
            if size > 1 << 20:
                raise CheckFailed(f"AMQP frame of {size} bytes is not a Connection.Start")
            payload = await reader.readexactly(size + 1)  # + frame-end octet
            parse_connection_start(header, payload)
            return Passed("AMQP Connection.Start")
        except asyncio.IncompleteReadError as exc:
            raise CheckFailed("broker closed the connection during the handshake") from exc
        finally:
            await close_writer(writer)
