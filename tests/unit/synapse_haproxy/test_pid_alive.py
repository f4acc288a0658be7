"""pid_alive: a process reaped between its kill(0) and the read of its /proc entry is gone."""

from __future__ import annotations

import os

import pytest

from synapse.haproxy import pids

NO_SUCH_PID = 2**30  # above any pid_max: /proc has no entry for it


def test_a_process_reaped_after_its_kill_answered_is_not_alive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kill(pid, 0) answered while it was a zombie; its parent reaped it right after, so
    # its /proc entry is gone when read (before: "no /proc", taken for alive).
    monkeypatch.setattr(pids.os, "kill", lambda _pid, _sig: None)
    assert not pids.pid_alive(NO_SUCH_PID)


def test_a_live_process_is_alive_and_a_missing_one_is_not() -> None:
    assert pids.pid_alive(os.getpid())
    assert not pids.pid_alive(NO_SUCH_PID)
