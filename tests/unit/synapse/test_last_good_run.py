"""The last good copy follows HAProxy (synapse.last_good_run): a load's pending copy is kept
once HAProxy runs that config, and a start whose config HAProxy refuses as a whole, with no
HAProxy serving, runs the copy once (review s39)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from synapse.contract import ApplyOutcome, ApplyResult
from synapse.last_good_run import CopyFollowsHAProxy


class Kept:
    """``LastGood``'s part that the daemon's follower uses."""

    def __init__(self, pending: str | None) -> None:
        self.pending, self.enabled, self.info = pending, True, None
        self.promoted: list[str | None] = []

    def accepted(self, pending: str | None) -> None:
        self.promoted.append(pending)


def follower(owner: Any) -> CopyFollowsHAProxy:
    """As the daemon's start attaches it (its config loaded, no SIGHUP yet)."""
    follow = CopyFollowsHAProxy(owner)
    follow.attach(SimpleNamespace())  # type: ignore[arg-type]
    return follow


def daemon(pending: str | None = None, alive: bool = False) -> Any:
    reloads: list[list[str] | None] = []

    async def reload_config(refused: list[str] | None = None) -> bool:
        reloads.append(refused)
        return True

    managed = SimpleNamespace(alive=alive)
    source = SimpleNamespace(last_good=Kept(pending))
    return SimpleNamespace(config=object(), config_source=source, reloads=reloads,
                           controller=SimpleNamespace(managed_haproxy=managed, on_applied=None),
                           reload_config=reload_config, _background=set())  # fmt: skip


def result(outcome: ApplyOutcome) -> ApplyResult:
    return ApplyResult(reload=outcome, error="[ALERT] unknown keyword 'bogus' in 'global'")


def test_a_pending_copy_is_kept_once_haproxy_runs_its_config() -> None:
    owner = daemon("/s/.last-good-x.yaml.a.pending")
    follow = follower(owner)
    start = owner.config
    follow.applied(start, result(ApplyOutcome.PENDING))  # (a reload waits: not yet)
    assert owner.config_source.last_good.promoted == []
    follow.applied(start, result(ApplyOutcome.DONE))
    assert owner.config_source.last_good.promoted == ["/s/.last-good-x.yaml.a.pending"]
    newer = object()
    owner.config_source.last_good.pending = "/s/.last-good-x.yaml.b.pending"  # a SIGHUP's load
    follow.applied(start, result(ApplyOutcome.NONE))  # an apply of the older config ...
    follow.loaded(newer)
    follow.applied(newer, result(ApplyOutcome.INVALID))  # ... and HAProxy refuses the new one
    assert owner.config_source.last_good.promoted == ["/s/.last-good-x.yaml.a.pending", None]
    assert owner.reloads == []  # (a SIGHUP: the running HAProxy stays)


def test_a_start_haproxy_refuses_runs_the_copy_once() -> None:
    async def main() -> None:
        owner = daemon("/s/.last-good-x.yaml.a.pending")
        follow = follower(owner)
        follow.applied(owner.config, result(ApplyOutcome.INVALID))
        follow.applied(owner.config, result(ApplyOutcome.INVALID))
        await asyncio.gather(*owner._background)
        assert len(owner.reloads) == 1 and "bogus" in owner.reloads[0][0]
        assert owner.config_source.last_good.promoted == []  # the refused file's: never kept

    asyncio.run(main())


def test_no_copy_while_haproxy_serves() -> None:
    async def main() -> None:
        served = daemon(alive=True)  # (the file on disk stands in: file_match)
        follower(served).applied(served.config, result(ApplyOutcome.INVALID))
        ran = daemon()  # HAProxy ran this process's config once: a later refusal is a SIGHUP's
        follow = follower(ran)
        follow.applied(ran.config, result(ApplyOutcome.DONE))
        follow.applied(ran.config, result(ApplyOutcome.INVALID))
        assert not served._background and not ran._background

    asyncio.run(main())


def test_a_sighups_pending_copy_waits_for_its_own_apply() -> None:
    """Review s39 cr-lastgood2: the start's pending copy was read at its first apply; a
    SIGHUP whose load ended before (its reload still settling) had its pending copy
    promoted by the start's apply, and HAProxy then refused it: a config HAProxy refuses
    was the copy (a real run: SIGHUP 0.4-0.7 s after the spawn, startup_wait 4)."""
    owner = daemon("/s/.last-good-x.yaml.start.pending")
    follow = follower(owner)
    owner.config_source.last_good.pending = "/s/.last-good-x.yaml.sighup.pending"
    follow.applied(owner.config, result(ApplyOutcome.DONE))  # the start's first apply
    assert owner.config_source.last_good.promoted == ["/s/.last-good-x.yaml.start.pending"]
    newer = object()
    follow.loaded(newer)
    follow.applied(newer, result(ApplyOutcome.INVALID))  # HAProxy refuses the SIGHUP's
    assert owner.config_source.last_good.promoted == ["/s/.last-good-x.yaml.start.pending"]


def refused_start(tmp_path: Path, not_started: int = 0) -> tuple[Any, list[object]]:
    """A real daemon whose start's config HAProxy refused, its loads recorded (the first
    ``not_started`` of them: its config child could not start, pids.max)."""
    from smartstack.spawn_limits import ChildNotStarted
    from synapse.config import SynapseConfig
    from synapse.daemon import SynapseDaemon

    start = SynapseConfig.model_validate({"services": {}, "admin": {"port": None}})
    real = SynapseDaemon(start, str(tmp_path / "synapse.yaml"))
    loads: list[object] = []

    async def load_config(refused: object = None) -> tuple[SynapseConfig, list[str]]:
        loads.append(refused)
        if len(loads) <= not_started:
            raise ChildNotStarted(["the config was not checked: pids.max"])
        return start, []

    async def apply_config(new: SynapseConfig) -> None:
        real.config = new

    real._load_config = load_config  # type: ignore[method-assign]
    real.apply_config = apply_config  # type: ignore[method-assign]
    real.reconciler = object()  # type: ignore[assignment]
    real._copy._refused = start  # (the start's first apply was refused)
    return real, loads


def test_the_copy_is_not_run_once_a_sighup_replaced_the_refused_config(
    tmp_path: Path,
) -> None:
    """Review s39 cr-lastgood2: a SIGHUP that held the reload lock when the start's first
    apply was refused applied its fixed file; the copy's run queued behind it then ran all
    the same (``config_last_good_used`` "HAProxy refuses the config file" of a valid file)."""

    async def main() -> None:
        real, loads = refused_start(tmp_path)
        real.config = real.config.model_copy()  # a SIGHUP's fixed file applied meanwhile
        assert await real.reload_config(["HAProxy refuses the config this file gives"]) is False
        assert loads == []
        real._copy._refused = real.config  # (still the refused one: the copy runs)
        assert await real.reload_config(["HAProxy refuses the config this file gives"])
        assert loads == [["HAProxy refuses the config this file gives"]]
        await real.stop()

    asyncio.run(main())


def test_a_copy_whose_reload_waits_is_kept_once_the_controller_runs_it() -> None:
    """Review s39 lastgood3: a SIGHUP's apply ended PENDING (restart_interval); the reload
    the controller ran later never reached ``applied``: 15 s after HAProxy served the new
    service the copy held the old services, its pending copy left (pending_real.py)."""
    owner = daemon("/s/.last-good-x.yaml.start.pending")
    follow = follower(owner)
    follow.applied(owner.config, result(ApplyOutcome.DONE))
    newer, kept = object(), owner.config_source.last_good.promoted
    owner.config_source.last_good.pending = "/s/.last-good-x.yaml.sighup.pending"
    follow.loaded(newer)
    owner.config = newer
    follow.applied(newer, result(ApplyOutcome.PENDING))
    told = owner.controller.on_applied
    assert told is not None, "the controller's own applies are not heard"
    told(result(ApplyOutcome.FAILED))  # (the reload failed: tried again, still pending)
    assert kept == ["/s/.last-good-x.yaml.start.pending"]
    told(result(ApplyOutcome.DONE))  # the pending reload ran: HAProxy runs it
    assert kept[1:] == ["/s/.last-good-x.yaml.sighup.pending"]
    newest = object()  # a later SIGHUP: an apply of the older desired state is no word on it
    owner.config_source.last_good.pending = "/s/.last-good-x.yaml.newest.pending"
    follow.loaded(newest)
    owner.config = newest
    told(result(ApplyOutcome.DONE))
    assert kept[2:] == []


def test_a_copy_run_whose_child_cannot_start_is_retried_as_the_copys_run(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Review s39 lastgood3: the retry (RetryNotChecked) of a copy's run that hit pids.max
    was a SIGHUP's reload: it read the refused file again, the copy was never run."""

    async def main() -> None:
        monkeypatch.setattr("smartstack.spawn_limits.RETRY_S", 0.01)
        real, loads = refused_start(tmp_path, not_started=1)
        refused = ["HAProxy refuses the config this file gives: x"]
        assert await real.reload_config(refused) is False
        async with asyncio.timeout(5):
            while len(loads) < 2 or real._background:
                await asyncio.sleep(0.01)
        assert loads == [refused, refused], "the retry read the refused file, not the copy"
        await real.stop()

    asyncio.run(main())


def test_a_sighups_refused_config_runs_the_copy_the_start_never_ran() -> None:
    """Review s39 cr-lastgood3: the start's copy run was queued (or retried: pids.max) and a
    SIGHUP's load of the file, HAProxy refusing it too, replaced the config first: the copy
    was skipped (``still_refused``) and never queued again (``_tried``): nothing served."""

    async def main() -> None:
        owner = daemon("/s/.last-good-x.yaml.a.pending")
        follow = follower(owner)
        follow.applied(owner.config, result(ApplyOutcome.INVALID))  # the copy's run queued
        await asyncio.gather(*owner._background)  # (skipped: a SIGHUP's load went first)
        newer = object()
        follow.loaded(newer)
        owner.config = newer
        follow.applied(newer, result(ApplyOutcome.INVALID))  # HAProxy refuses it too
        await asyncio.gather(*owner._background)
        assert len(owner.reloads) == 2, "the copy was never run: nothing is served"
        assert follow.still_refused()

    asyncio.run(main())
