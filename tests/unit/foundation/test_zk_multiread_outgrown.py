"""A multi-read queued before a drop shrank the request size waited for the next
connection at its old size and dropped that one too (review s43 cr-zkdrop: a loaded CI run,
four 150-path pieces under jute.maxbuffer=8192, the last three queued after the drop that
made the size 37). Kazoo's thread now fails such a request unsent (``Outgrown``) and the
batcher sends its reads again in pieces of the new size; its callers never see it."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

from kazoo.protocol.serialization import Exists
from kazoo_fakes import send_only_connection

from smartstack.kazoo_inline import InlineHandler
from smartstack.zk_multiread import MultiRead, Outgrown, ReadBatcher


class FakeClient:
    """What ReadBatcher uses of a KazooClient; the requests it queues are kept."""

    def __init__(self) -> None:
        self.handler = InlineHandler()
        self.chroot = ""
        self._stopped = threading.Event()
        self._data_watchers: dict[str, set[Any]] = collections.defaultdict(set)
        self.last_zxid = 0
        self.calls: list[tuple[MultiRead, Any]] = []

    def _call(self, request: MultiRead, result: Any) -> None:
        self.calls.append((request, result))


def answer(request: MultiRead, result: Any) -> None:
    result.set([(path.encode(), None) for path in request.paths])


def test_reads_queued_before_a_shrink_are_sent_again_in_pieces() -> None:
    paths = [f"/big/n{i:04d}" for i in range(600)]

    async def scenario() -> list[Any]:
        client = FakeClient()
        batcher = ReadBatcher(client, asyncio.get_running_loop())  # type: ignore[arg-type]
        batcher._cap, batcher._dropped_at = 150, time.monotonic()  # (a first drop judged)
        read = batcher.read(paths, None)
        await asyncio.sleep(0)
        assert [len(r.paths) for r, _ in client.calls] == [150] * 4
        assert not any(r.stale() for r, _ in client.calls)
        batcher._cap = 37  # the first piece dropped the connection; the others still queued
        first, *queued = client.calls
        client.calls = []
        answer(*first)
        for request, result in queued:
            assert request.stale()  # (kazoo's thread asks before it sends)
            result.set_exception(Outgrown())
        for _ in range(3):
            await asyncio.sleep(0)
        assert client.calls and max(len(r.paths) for r, _ in client.calls) <= 37
        assert sum(len(r.paths) for r, _ in client.calls) == 450
        for request, result in client.calls:
            answer(request, result)
        return await asyncio.wait_for(read, 5)

    replies = asyncio.run(scenario())
    assert [data for data, _ in replies] == [path.encode() for path in paths]  # in order


def multi_read(path: str, stale: bool) -> MultiRead:
    request = MultiRead([path], False)
    request.outgrown = lambda size: stale
    return request


def test_kazoos_thread_fails_an_outgrown_multi_read_unsent() -> None:
    handler = InlineHandler()
    stale_head, fresh, stale_later = (
        multi_read("/stale-head", True), multi_read("/fresh", False), multi_read("/later", True)
    )  # fmt: skip
    results = [handler.async_result() for _ in range(4)]
    queue: collections.deque[Any] = collections.deque(
        zip([stale_head, fresh, Exists("/x", False), stale_later], results, strict=True)
    )
    conn, written = send_only_connection(queue)
    conn.connections = 7
    conn._send_request(1.0, 1.0)
    assert isinstance(results[0].exception, Outgrown)  # failed at the head, never written
    assert len(written) == 1 and b"/fresh" in written[0] and b"/x" in written[0]
    assert b"/stale-head" not in written[0] and b"/later" not in written[0]
    assert fresh.sent_on == 7 and stale_head.sent_on == 0  # (a drop's judgement reads it)
    assert [r for r, _ in queue] == [stale_later]  # the batch stopped before it
    conn._send_request(1.0, 1.0)
    assert isinstance(results[3].exception, Outgrown) and not queue and len(written) == 1
