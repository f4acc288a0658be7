"""The panic's backstop (synapse.haproxy.panic_poll): which backends ``show stat -1 2 -1``
says are DOWN, and which of them are newly so (an adopted HAProxy's alert never reaches
synapse: before, its backends never panicked)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from smartstack.tasks import cancel_and_wait
from synapse.haproxy import panic_poll
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.panic_poll import ASK, backends_down, newly_down, pause
from synapse.haproxy.panic_watch import LOOKS, PanicSettings, PanicWatch

HEADER = "# pxname,svname,qcur,status,chkfail,chkdown,lastchg,\n"


def stat(*rows: tuple[str, str, str, int]) -> str:
    lines = [f"{px},{sv},0,{status},,{chkdown},3," for px, sv, status, chkdown in rows]
    return HEADER + "\n".join(lines) + "\n\n"


def test_only_backend_lines_that_are_down() -> None:
    text = stat(("web", "BACKEND", "DOWN", 2), ("api", "BACKEND", "UP", 1),
                ("web", "a", "DOWN", 1), ("shop_zone_az1", "BACKEND", "DOWN", 0))  # fmt: skip
    assert backends_down(text) == {"web": 2, "shop_zone_az1": 0}


def test_an_empty_or_odd_answer_is_no_backend() -> None:
    assert backends_down("") == {}
    assert backends_down(HEADER + "web,BACKEND,0,DOWN,,x,3,\n") == {"web": 0}


def test_newly_down_and_down_again() -> None:
    assert newly_down({}, {"web": 1, "api": 4}) == ["api", "web"]  # (the first read: all)
    assert newly_down({"web": 1}, {"web": 1}) == []  # (still DOWN: the panic was told)
    assert newly_down({"web": 1}, {"web": 2}) == ["web"]  # (UP and DOWN again between reads)
    assert newly_down({"web": 1}, {}) == []


class Answers:
    """A fake admin socket: each `ask` the next of ``answers`` (a batch cut short: [])."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)

    async def ask(self, commands: list[str]) -> list[str]:
        assert commands == [ASK]
        return self.answers.pop(0) if self.answers else [stat(("web", "BACKEND", "DOWN", 1))]


async def test_an_answer_cut_short_does_not_end_the_poll(monkeypatch) -> None:
    """HAProxy killed as it answered (the worker's crash, its container's restart) answers
    nothing (a real 2.6 of 5,000 backends, killed during the read: 26 of 30). Before: a
    ValueError ended the poll, silently, and the controller's stop raised it."""
    monkeypatch.setattr(panic_poll, "FASTEST_S", 0.001)
    poked: list[str] = []
    task = asyncio.ensure_future(panic_poll.poll(Answers([]), poked.append))  # type: ignore[arg-type]
    for _ in range(100):
        await asyncio.sleep(0.002)
        if poked:
            break
    assert not task.done() and poked == ["web"]
    await cancel_and_wait(task)


async def test_looks_at_many_backends_share_a_few_connections() -> None:
    """200 backends found DOWN at once (every instance gone: their servers in maintenance)
    were 200 looks at once: 52 connections on synapse's admin socket (maxconn 20), its
    listen queue full, 323 looks refused in 5 s and the controller's own reads with them."""
    watch = PanicWatch(
        None, lambda b: PanicSettings(True, 10.0), HAProxyMetrics(CollectorRegistry())
    )
    at_once = [0, 0]

    class Counting:
        async def ask(self, commands: list[str]) -> list[str]:
            at_once[0] += 1
            at_once[1] = max(at_once)
            try:
                await asyncio.sleep(0.01)
            finally:
                at_once[0] -= 1
            return [""]

    watch.client = Counting()  # type: ignore[assignment]
    for i in range(40):
        watch.poke(f"s{i}")
    await asyncio.sleep(0.02)
    await watch.stop()
    assert 0 < at_once[1] <= LOOKS


def test_the_pause_grows_with_the_backends_read() -> None:
    """A sidecar's few backends are read every 0.25 s (the gap of an adopted HAProxy's
    panic under the checked services' 1 s wait; before: 2 s, 4 requests failed over 2
    panics); 1,000 and more every 2 s (HAProxy's cost of the read, ~6 us a backend)."""
    assert pause(0) == pause(10) == pause(125) == 0.25
    assert pause(400) == 0.8 and pause(500) == 1.0
    assert pause(1000) == pause(20000) == 2.0
