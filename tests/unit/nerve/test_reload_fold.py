"""nerve.reload_fold: SIGHUPs folded as synapse folds them (review s32: 20 SIGHUPs in 1 s were
20 reloads in a row, 7 still queued 4 s later, and a restart stop meanwhile withdrew all)."""

from __future__ import annotations

import asyncio

from nerve.reload_fold import ReloadFold
from nerve.reload_plan import ReloadPlan, Step, plan_changes


class FileReloads:
    """A reload that reads ``file`` at its start, then takes a while (a child validating)."""

    def __init__(self) -> None:
        self.file = "v1"
        self.read: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self) -> bool:
        self.read.append(self.file)
        await self.release.wait()
        self.release.clear()
        return True


async def _settle(fold: ReloadFold, reloads: FileReloads) -> None:
    while fold.task is not None:
        reloads.release.set()
        await asyncio.sleep(0)


async def test_a_storm_is_one_reload_running_and_one_after_it_reading_the_last_file() -> None:
    reloads = FileReloads()
    fold = ReloadFold(reloads)
    fold.sighup()
    await asyncio.sleep(0)  # the first one reads v1 and waits for its child
    for n in range(20):
        reloads.file = f"v{n + 2}"
        fold.sighup()
    await _settle(fold, reloads)
    assert fold.runs == 2
    assert reloads.read == ["v1", "v21"]  # none lost: the last file is applied


async def test_sighups_before_the_reload_reads_the_file_are_that_reload() -> None:
    reloads = FileReloads()
    fold = ReloadFold(reloads)
    for _ in range(5):  # (all before the loop ran the first: it reads after them)
        fold.sighup()
    # the task has not started: the again flag it clears at its start covers them
    await _settle(fold, reloads)
    assert fold.runs == 1 and reloads.read == ["v1"]


async def test_a_sighup_after_a_reload_ended_starts_another() -> None:
    reloads = FileReloads()
    fold = ReloadFold(reloads)
    fold.sighup()
    await _settle(fold, reloads)
    reloads.file = "v2"
    fold.sighup()
    await _settle(fold, reloads)
    assert reloads.read == ["v1", "v2"]


async def test_a_failing_reload_does_not_lose_the_one_asked_after_it() -> None:
    calls: list[int] = []
    gate = asyncio.Event()

    async def reload() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            await gate.wait()
            raise RuntimeError("a bug")

    fold = ReloadFold(reload)
    fold.sighup()
    await asyncio.sleep(0)
    fold.sighup()
    gate.set()
    while fold.task is not None:
        await asyncio.sleep(0)
    assert calls == [0, 1]


async def test_after_close_no_reload_starts_and_the_pending_one_does_not_run() -> None:
    reloads = FileReloads()
    fold = ReloadFold(reloads)
    fold.sighup()
    await asyncio.sleep(0)
    fold.sighup()  # one more to come...
    running = fold.close()  # ...but a stop begins
    assert running is not None
    fold.sighup()
    await _settle(fold, reloads)
    assert fold.runs == 1 and fold.task is None


def test_a_plan_changing_nothing_has_no_changes() -> None:
    cfg = object()
    unchanged = ReloadPlan((Step("web", cfg, "unchanged", "web"),), ())  # type: ignore[arg-type]
    assert plan_changes(unchanged) == 0
    changed = ReloadPlan((Step("web", cfg, "checks", "web"),), ("api",))  # type: ignore[arg-type]
    assert plan_changes(changed) == 2


async def test_a_plan_is_not_applied_once_a_stop_began(monkeypatch) -> None:
    """The stop decides on the plan being applied when it begins (close_reloads); a reload
    whose child answers after that is not applied (``reload_abandoned``), so no plan begins
    between the stop signal and the reload's cancellation."""
    import nerve.daemon
    from nerve.config import NerveConfig
    from nerve.daemon import NerveDaemon

    monkeypatch.setattr(nerve.daemon, "plan_reload", lambda *_: ReloadPlan((), ("api",)))
    daemon = NerveDaemon(NerveConfig(instance_id="i-test"))
    seen: list[int] = []

    async def apply_plan(new: object, plan: ReloadPlan) -> dict[str, list[str]]:
        seen.append(daemon.close_reloads())  # a stop signal while this plan is applied
        return {"removed": list(plan.removed)}

    monkeypatch.setattr(daemon, "_apply_plan", apply_plan)
    assert await daemon.reload(NerveConfig(instance_id="i-test")) == {"removed": ["api"]}
    assert seen == [1]  # the stop found a plan of 1 change being applied: it withdraws all
    assert daemon.close_reloads() == 0  # (and none once it ended)
    assert await daemon.reload(NerveConfig(instance_id="i-test")) == {}  # closed: abandoned
    assert seen == [1]
