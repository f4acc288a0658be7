"""A SIGHUP's host-wide name (nerve.daemon._reload_from_file, identity_lock.retake): which
names are let go, the sockets themselves stubbed (pure logic).

Review s28 (lock2) LOW: a reload that raised after retake() took the new name never let go
of the old one nor the new; and when the new name was ours already retake() returned
nothing, so names left over from an earlier reload were held for good.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import nerve.daemon as daemon
from smartstack import identity_lock


class _Source:
    async def reload(self) -> tuple[Any, list[str]]:
        return SimpleNamespace(services={}), []


def _nerve(fails: bool, abandoned: bool = False) -> Any:
    async def reload(new: Any) -> dict[str, list[str]]:
        if fails:
            raise RuntimeError("reload failed")
        return {} if abandoned else {"unchanged": ["web"]}

    source = _Source()

    async def read_settled(path: Any) -> tuple[Any, list[str], dict[Any, Any]]:
        return *(await source.reload()), {}

    return SimpleNamespace(source=source, config=None, reload=reload, service_configs={},
                           _read_settled=read_settled)  # fmt: skip


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], list[set[str]]]:
    """The held names ("old"; retake adds "new", gives "old" to let go) and the releases."""
    held, released = {"old"}, []

    def retake(running: Any, new: Any) -> set[str]:
        held.add("new")
        return {"old"}

    def release(gone: Any) -> None:
        released.append(set(gone))
        held.difference_update(gone)

    monkeypatch.setattr(daemon, "retake_for_reload", retake)
    monkeypatch.setattr(daemon, "held", lambda: set(held))
    monkeypatch.setattr(daemon, "release", release)
    return held, released


async def test_an_applied_reload_lets_the_old_name_go(names: Any) -> None:
    held, released = names
    assert await daemon.NerveDaemon._reload_from_file(_nerve(False), None) is True
    assert released == [{"old"}] and held == {"new"}


async def test_a_reload_abandoned_for_a_stop_keeps_the_old_name(names: Any) -> None:
    # (its plan not applied: the running config, whose name the old one is, stays)
    held, released = names
    assert await daemon.NerveDaemon._reload_from_file(_nerve(False, abandoned=True), None) is False
    assert released == [{"new"}] and held == {"old"}


async def test_a_failed_reload_lets_the_new_name_go_and_keeps_the_old(names: Any) -> None:
    # before: neither was released (the old name and the new one held for good)
    held, released = names
    with pytest.raises(RuntimeError):
        await daemon.NerveDaemon._reload_from_file(_nerve(True), None)
    assert released == [{"new"}] and held == {"old"}


def test_retake_of_a_name_held_already_returns_the_stale_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # before: set(), so a name left from an earlier reload was never let go
    name = identity_lock.socket_name("nerve", "[]")
    monkeypatch.setattr(identity_lock, "_active", True)
    monkeypatch.setattr(identity_lock, "_held", {name: None, "stale": None})
    assert identity_lock.retake("nerve", "[]", []) == {"stale"}
