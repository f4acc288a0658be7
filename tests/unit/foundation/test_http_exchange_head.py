"""smartstack.http_exchange: a response head's size limit holds however the head was cut
into reads (h11 alone refuses a long head only when it comes in more than one read)."""

from __future__ import annotations

import pytest

from smartstack.http_exchange import Exchange, HeadTooLarge


class Reads:
    """A reader that gives its chunks one read at a time (as TCP segments may come)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def read(self, _: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


class Sink:
    def write(self, _: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass


class WideExchange(Exchange):
    max_head = 64 * 1024


def answer(header_size: int) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * header_size + b"\r\nContent-Length: 2\r\n\r\nok"


async def status(exchange_type: type[Exchange], chunks: list[bytes]) -> int | str:
    exchange = exchange_type(Reads(chunks), Sink())  # type: ignore[arg-type]
    try:
        return (await exchange.request("GET", "/", [("Host", "h")])).status_code
    except HeadTooLarge as exc:
        return str(exc)


@pytest.mark.parametrize(
    ("exchange_type", "size", "expected"),
    [
        (Exchange, 12_000, 200),
        (Exchange, 20_000, "the server's response head is over 16384 bytes"),
        (WideExchange, 20_000, 200),
        (WideExchange, 60_000, 200),
        (WideExchange, 70_000, "the server's response head is over 65536 bytes"),
    ],
)
async def test_a_head_passes_or_fails_whatever_its_reads(
    exchange_type: type[Exchange], size: int, expected: int | str
) -> None:
    data = answer(size)
    whole = await status(exchange_type, [data])
    split = await status(exchange_type, [data[:9000], data[9000:17000], data[17000:]])
    runs = await status(exchange_type, [data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert (whole, split, runs) == (expected, expected, expected)


async def test_interim_heads_are_measured_apart_from_the_final_one() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: " + b"l" * 10_000 + b"\r\n\r\n"
    assert await status(Exchange, [interim * 3 + answer(10_000)]) == 200
