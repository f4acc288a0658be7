"""When the owed render (``synapse.haproxy.owed``) is paid: QUIET after the last owed
change, WINDOW after the first at the latest (a stream of changes folds into one render)."""

from __future__ import annotations

import asyncio

import pytest

from synapse.haproxy import owed
from synapse.haproxy.owed import OwedRender


class _Reader:
    def plan_later(self, backends: object) -> None:
        pass


class _Express:
    ready = False

    def deferred(self) -> frozenset[str]:
        return frozenset()


def _owed_render(paid: list[float]) -> OwedRender:
    loop = asyncio.get_running_loop()

    async def apply() -> None:  # (the controller's render calls ``paid()``)
        paid.append(loop.time())
        render.paid()

    render = OwedRender(asyncio.Lock(), apply)
    return render


def _owed_with(
    monkeypatch: pytest.MonkeyPatch, quiet: float, window: float
) -> tuple[OwedRender, list[float]]:
    """An owed render paid ``quiet`` after the last change, ``window`` after the first."""
    monkeypatch.setattr(owed, "QUIET", quiet)
    monkeypatch.setattr(owed, "WINDOW", window)
    paid: list[float] = []
    return _owed_render(paid), paid


async def _stream(render: OwedRender, count: int, gap: float) -> float:
    """``count`` owed changes ``gap`` apart; the loop time of the last."""
    for i in range(count):
        if i:
            await asyncio.sleep(gap)
        render.defer(_Reader(), _Express(), ["cmd"])  # type: ignore[arg-type]
    return asyncio.get_running_loop().time()


async def test_changes_closer_than_quiet_fold_into_one_render_after_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render, paid = _owed_with(monkeypatch, 0.1, 30.0)
    last = await _stream(render, 6, 0.03)  # 0.15 s in all: longer than QUIET
    await asyncio.wait_for(render._task, 5)  # type: ignore[arg-type]
    assert len(paid) == 1 and render.paid_later == 1 and not render.owed
    assert paid[0] >= last + 0.1 - 0.005  # (the loop's clock resolution)


async def test_a_stream_that_never_pauses_is_paid_each_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    render, paid = _owed_with(monkeypatch, 10.0, 0.1)
    start = asyncio.get_running_loop().time()
    await _stream(render, 20, 0.02)  # 0.38 s: nearly four windows
    assert paid and paid[0] <= start + 0.1 + 0.3  # (the cap, not QUIET: 10 s)
    await render.close()  # pays the rest at once
    assert not render.owed


class _Recheck:
    def __init__(self) -> None:
        self.added: list[set[str]] = []

    def add(self, names: set[str]) -> None:
        self.added.append(set(names))


class _RecheckedReader(_Reader):
    def __init__(self) -> None:
        self.recheck = _Recheck()


class _ExpressTo(_Express):
    def __init__(self, backends: frozenset[str]) -> None:
        self.backends = backends

    def deferred(self) -> frozenset[str]:
        return self.backends


async def test_paying_hands_the_owed_backends_to_the_re_read_once() -> None:
    """An outside reload after the re-read a second after the commands but before the file
    had the owed servers loads a file without them: paying the render has those backends
    read again (a second later), so the new process is found then, not at the next sweep."""
    reader = _RecheckedReader()
    render = _owed_render([])
    render.defer(reader, _ExpressTo(frozenset({"a"})), ["cmd"])  # type: ignore[arg-type]
    render.defer(reader, _ExpressTo(frozenset({"b"})), ["cmd"])  # type: ignore[arg-type]
    assert reader.recheck.added == []  # (the commands' own re-read is the reader's)
    await render.pay()
    assert reader.recheck.added == [{"a", "b"}] and not render.owed
    render.paid()  # a later render with nothing owed since: nothing to read again
    assert reader.recheck.added == [{"a", "b"}]
    await render.close()
