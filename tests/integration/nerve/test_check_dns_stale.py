"""A check host's name whose answer expired while DNS drops a query: the last good answer
is used, so one lost packet (glibc then waits its whole 5 s timeout) does not withdraw a
healthy service (review: out of ZooKeeper 4.0-4.5 s); a definite "no such name" is not
masked. Real listeners on 127.0.0.1; ``socket.getaddrinfo`` is ours, per phase."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from nerve.checks import resolve
from nerve.checks.tcp import TcpCheck

NAME = "svc.test"


class Dns:
    """``svc.test`` → 127.0.0.1, until ``mode`` says the query is lost (``hang``), answered
    "try again" (``again``) or "no such name" (``gone``)."""

    def __init__(self) -> None:
        self.real = socket.getaddrinfo
        self.mode = "ok"
        self.release = threading.Event()

    def getaddrinfo(self, host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST or host != NAME:
            return self.real(host, port, *args, **kwargs)
        if self.mode == "hang":
            self.release.wait(30)
        if self.mode in ("hang", "again"):
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if self.mode == "gone":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.real("127.0.0.1", port, *args, **kwargs)


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[Dns]:
    fake = Dns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    monkeypatch.setattr(resolve, "RESOLVER", resolve.Resolver(cache_seconds=0.05))
    yield fake
    fake.release.set()


async def test_a_lost_query_or_try_again_keeps_the_last_good_answer(dns: Dns) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    check = TcpCheck("t", NAME, port, 0.5)
    try:
        assert (await check.run()).ok
        for mode in ("hang", "again"):
            dns.mode = mode
            await asyncio.sleep(0.1)  # (the answer expired)
            results = [await check.run() for _ in range(3)]
            assert [r.ok for r in results] == [True] * 3, (mode, [r.detail for r in results])
        dns.mode = "gone"  # a definite answer: not masked by the last good one
        dns.release.set()
        await asyncio.sleep(0.1)
        for _ in range(20):  # (the hung lookup ends first; then a fresh one says "gone")
            result = await check.run()
            if not result.ok:
                break
            await asyncio.sleep(0.05)
        assert result.detail == "gaierror: [Errno -2] Name or service not known"
    finally:
        listener.close()
