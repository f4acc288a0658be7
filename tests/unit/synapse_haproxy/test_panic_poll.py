"""The panic's backstop (synapse.haproxy.panic_poll): which backends ``show stat -1 2 -1``
says are DOWN, and which of them are newly so (an adopted HAProxy's alert never reaches
synapse: before, its backends never panicked)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from smartstack.tasks import cancel_and_wait
from synapse.haproxy import panic_poll
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.panic_poll import ASK, Read, backends_down, newly_down, pause, read_of
from synapse.haproxy.panic_watch import LOOKS, PanicSettings, PanicWatch

HEADER = "# pxname,svname,qcur,status,chkfail,chkdown,lastchg,\n"


def stat(*rows: tuple[str, str, str, int]) -> str:
    lines = [f"{px},{sv},0,{status},,{chkdown},3," for px, sv, status, chkdown in rows]
    return HEADER + "\n".join(lines) + "\n\n"


def info(pid: int, start: int = 1796479038, stopping: int = 0) -> str:
    return f"Name: HAProxy\nPid: {pid}\nStopping: {stopping}\nStart_time_sec: {start}\n\n"


def test_only_backend_lines_that_are_down() -> None:
    text = stat(("web", "BACKEND", "DOWN", 2), ("api", "BACKEND", "UP", 1),
                ("web", "a", "DOWN", 1), ("shop_zone_az1", "BACKEND", "DOWN", 0))  # fmt: skip
    assert backends_down(text) == {"web": 2, "shop_zone_az1": 0}


def test_an_empty_or_odd_answer_is_no_backend() -> None:
    assert backends_down("") == {}
    assert backends_down(HEADER + "web,BACKEND,0,DOWN,,x,3,\n") == {"web": 0}


def test_newly_down_and_down_again() -> None:
    def one(down: dict[str, int]) -> Read:
        return Read("8@1", down)

    assert newly_down(None, one({"web": 1, "api": 4})) == ["api", "web"]  # (the first: all)
    assert newly_down(one({}), one({"web": 1, "api": 4})) == ["api", "web"]
    assert newly_down(one({"web": 1}), one({"web": 1})) == []  # (still DOWN: it was told)
    assert newly_down(one({"web": 1}), one({"web": 2})) == ["web"]  # (UP and DOWN between)
    assert newly_down(one({"web": 1}), one({})) == []


def test_another_workers_counts_start_again() -> None:
    """A reload between two reads: the new worker's counts start again (1 for a backend its
    state file brings back DOWN), so the same count is no proof of no change: every backend
    DOWN is newly so. Before: DOWN, UP, a reload and DOWN again showed 1 and 1, no poke."""
    old, new = Read("8@1", {"web": 1, "api": 2}), Read("9@2", {"web": 1, "api": 1})
    assert newly_down(old, new) == ["api", "web"]
    assert newly_down(new, Read("9@2", {"web": 1, "api": 1})) == []  # (once: no loop)


def test_the_worker_read_its_pid_and_start() -> None:
    """A pid again with another start is another worker (a container restarted: its
    HAProxy has pid 1 or 8 each time); a stopping one's answer is not read (an old worker
    on the listener it shares for a moment: stale)."""
    text = stat(("web", "BACKEND", "DOWN", 1))
    read = read_of(info(8), text)
    assert read is not None and read.down == {"web": 1}
    assert read_of(info(8), "") == Read(read.worker, {})
    again = read_of(info(8, start=1796479099), text)
    assert again is not None and again.worker != read.worker
    assert read_of(info(8, stopping=1), text) is None


class Answers:
    """A fake admin socket: each `ask` the next of ``answers`` (a batch cut short: []); each
    one {command: its answer}, then web DOWN once (chkdown 1) for good, worker 8."""

    def __init__(self, *answers: dict[str, str]) -> None:
        self.answers = list(answers)

    async def ask(self, commands: list[str]) -> list[str]:
        web = {"show info": info(8), ASK: stat(("web", "BACKEND", "DOWN", 1))}
        answers = self.answers.pop(0) if self.answers else web
        return [answers[c] for c in commands[: len(answers)]]


async def _poked(answers: Answers, monkeypatch) -> list[str]:
    """The backends the poll poked over ``answers``' reads and a few more of the last."""
    monkeypatch.setattr(panic_poll, "FASTEST_S", 0.001)
    poked: list[str] = []
    task = asyncio.ensure_future(panic_poll.poll(answers, poked.append))  # type: ignore[arg-type]
    for _ in range(200):
        await asyncio.sleep(0.002)
        if not answers.answers:
            break
    await asyncio.sleep(0.02)  # (a few more reads of the last answer: no more pokes)
    assert not task.done()
    await cancel_and_wait(task)
    return poked


async def test_an_answer_cut_short_does_not_end_the_poll(monkeypatch) -> None:
    """HAProxy killed as it answered (the worker's crash, its container's restart) answers
    nothing (a real 2.6 of 5,000 backends, killed during the read: 26 of 30). Before: a
    ValueError ended the poll, silently, and the controller's stop raised it."""
    assert await _poked(Answers({}, {"show info": info(8)}), monkeypatch) == ["web"]


async def test_a_backend_down_again_after_a_reload_is_poked(monkeypatch) -> None:
    """DOWN (chkdown 1) at a read; UP, a reload, DOWN again before the next: the new worker
    says 1 too (a real 2.6 of 1,000 backends read every 2 s: 24 of 24 requests failed over
    6 s, no panic). Before: poked once, at the first read."""
    old = {"show info": info(7), ASK: stat(("web", "BACKEND", "DOWN", 1))}
    assert await _poked(Answers(old), monkeypatch) == ["web", "web"]


async def test_a_stopping_workers_answer_is_not_read(monkeypatch) -> None:
    """An old worker after a reload, on the listener it shares for a moment, answers with
    its own counts: read, it was one more worker change (a needless poke), then another."""
    stopping = {"show info": info(7, stopping=1), ASK: stat(("web", "BACKEND", "DOWN", 3))}
    assert await _poked(Answers(stopping), monkeypatch) == ["web"]


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
