"""The last good copy follows HAProxy (synapse.last_good_run): a load's pending copy is kept
once HAProxy runs that config, and a start whose config HAProxy refuses as a whole, with no
HAProxy serving, runs the copy once (review s39)."""

from __future__ import annotations

import asyncio
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


def daemon(pending: str | None = None, alive: bool = False) -> Any:
    reloads: list[list[str] | None] = []

    async def reload_config(refused: list[str] | None = None) -> bool:
        reloads.append(refused)
        return True

    managed = SimpleNamespace(alive=alive)
    source = SimpleNamespace(last_good=Kept(pending))
    return SimpleNamespace(config=object(), config_source=source, reloads=reloads,
                           controller=SimpleNamespace(managed_haproxy=managed),
                           reload_config=reload_config, _background=set())  # fmt: skip


def result(outcome: ApplyOutcome) -> ApplyResult:
    return ApplyResult(reload=outcome, error="[ALERT] unknown keyword 'bogus' in 'global'")


def test_a_pending_copy_is_kept_once_haproxy_runs_its_config() -> None:
    owner = daemon("/s/.last-good-x.yaml.a.pending")
    follow = CopyFollowsHAProxy(owner)
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
        follow = CopyFollowsHAProxy(owner)
        follow.applied(owner.config, result(ApplyOutcome.INVALID))
        follow.applied(owner.config, result(ApplyOutcome.INVALID))
        await asyncio.gather(*owner._background)
        assert len(owner.reloads) == 1 and "bogus" in owner.reloads[0][0]
        assert owner.config_source.last_good.promoted == []  # the refused file's: never kept

    asyncio.run(main())


def test_no_copy_while_haproxy_serves() -> None:
    async def main() -> None:
        served = daemon(alive=True)  # (the file on disk stands in: file_match)
        CopyFollowsHAProxy(served).applied(served.config, result(ApplyOutcome.INVALID))
        ran = daemon()  # HAProxy ran this process's config once: a later refusal is a SIGHUP's
        follow = CopyFollowsHAProxy(ran)
        follow.applied(ran.config, result(ApplyOutcome.DONE))
        follow.applied(ran.config, result(ApplyOutcome.INVALID))
        assert not served._background and not ran._background

    asyncio.run(main())
