"""How long a managed reload is waited for (``synapse.haproxy.reload_wait``): past
``reload_timeout`` only while the master says the reload is under way, and never past
SLOW_FACTOR times it; a master that does not answer only while it runs (its CPU time
grows, it is not stopped). The clock and the master's /proc are the test's."""

from __future__ import annotations

import asyncio
import logging
import types

import pytest

from synapse.haproxy import reload_wait
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.reload_wait import SLOW_FACTOR, ReloadWait, failed, serves, under_way
from synapse.haproxy.sockets import SocketUnavailable

BEFORE = ProcInfo(master_pid=10, reloads=3, failed_reloads=0, workers=(11,))
RELOADED = ProcInfo(master_pid=10, reloads=4, failed_reloads=0, workers=(12,), old_workers=(11,))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(reload_wait, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


@pytest.fixture
def master(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Master 10's /proc: its state letter and CPU ticks (``ticks`` += 1: it ran)."""
    proc: dict[str, object] = {"state": "R", "ticks": 50}
    fake = lambda pid: (proc["state"], proc["ticks"]) if pid == 10 else None  # noqa: E731
    monkeypatch.setattr(reload_wait, "cpu", fake)
    return proc


def test_a_master_that_does_not_answer_or_reloaded_without_failing_is_at_the_reload():
    assert under_way(True, None, BEFORE)  # re-executing: parsing the config
    assert not under_way(True, None, BEFORE, runs=False)  # no answer, and it does not run
    assert under_way(True, RELOADED, BEFORE)  # its new worker forks or takes over
    assert not under_way(False, None, BEFORE)  # gone
    assert not under_way(True, BEFORE, BEFORE)  # as before the reload: the command was lost
    failed = ProcInfo(master_pid=10, reloads=4, failed_reloads=1, workers=(11,))
    assert not under_way(True, failed, BEFORE)


def test_after_a_failed_reload_the_next_one_under_way_is_not_taken_for_a_failure():
    """HAProxy 2.6's [failed: N] counts failed reloads since the last good one and goes
    back to 0 when a config loads: 1 [failed: 1] before, 2 [failed: 0] while the new
    worker starts (it was taken as not under way: failed at reload_timeout)."""
    after_failure = ProcInfo(master_pid=10, reloads=1, failed_reloads=1, workers=(11,))
    loading = ProcInfo(master_pid=10, reloads=2, failed_reloads=0, workers=(11, 12))
    failing_again = ProcInfo(master_pid=10, reloads=2, failed_reloads=2, workers=(11,))
    assert under_way(True, loading, after_failure)
    assert not failed(loading, after_failure)
    assert failed(failing_again, after_failure) and not under_way(
        True, failing_again, after_failure
    )
    assert not failed(after_failure, after_failure)  # (not re-executed yet: no verdict)
    assert failed(ProcInfo(master_pid=10, reloads=4, failed_reloads=1), BEFORE)


def test_a_reload_under_way_is_waited_for_past_the_timeout_up_to_the_cap(clock, master, caplog):
    caplog.set_level(logging.WARNING, logger="synapse.haproxy.managed")
    wait = ReloadWait(10.0, BEFORE, master=10)
    clock[0] += 9.9
    master["ticks"] = 51  # (starved: one tick in 10 s)
    assert wait.goes_on(alive=True)
    clock[0] += 0.2  # past reload_timeout, the master re-executing (no answer)
    assert wait.goes_on(alive=True)
    clock[0] += 9.5
    master["ticks"] = 52
    assert wait.goes_on(alive=True)
    wait.proc = RELOADED  # it answers: reloaded, the new worker not serving yet
    clock[0] += 20.0
    assert wait.goes_on(alive=True)
    clock[0] = 100.0 + 10.0 * SLOW_FACTOR
    assert not wait.goes_on(alive=True)  # a master that never gets there: failed at last
    assert wait.waited == 10.0 * SLOW_FACTOR
    slow = [r for r in caplog.records if r.getMessage() == "haproxy_reload_slow"]
    assert len(slow) == 1 and slow[0].smartstack_fields["master"] == "re-executing"


def test_no_sign_of_the_reload_or_a_start_fails_at_the_timeout(clock):
    lost, dead = ReloadWait(10.0, BEFORE), ReloadWait(10.0, BEFORE)
    start = ReloadWait(15.0, None)  # (a start: its own timeout, START_TIMEOUT)
    lost.proc = BEFORE  # answers as before the reload
    clock[0] += 10.0
    assert not lost.goes_on(alive=True)
    assert not dead.goes_on(alive=False)  # (no answer, but the master is gone)
    assert start.goes_on(alive=True)
    clock[0] += 5.0
    assert not start.goes_on(alive=True)


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_a_master_that_does_not_answer_nor_run_fails_at_the_timeout(clock, master, caplog, how):
    """A stopped (SIGSTOP, a debugger) or hung master's socket does not answer either: it
    was taken for re-executing and waited for 6 x reload_timeout."""
    caplog.set_level(logging.WARNING, logger="synapse.haproxy.managed")
    wait = ReloadWait(10.0, BEFORE, master=10)
    clock[0] += 0.5
    master["ticks"] = 51  # it took the reload command
    assert wait.goes_on(alive=True)
    if how == "stopped":
        master["state"] = "T"
    clock[0] += 9.5  # hung: no CPU since 0.5 s
    assert wait.goes_on(alive=True) is (how == "hung")  # (hung: it ran 9.5 s ago)
    clock[0] += 0.6
    assert not wait.goes_on(alive=True)
    assert "gets no CPU" in wait.stuck
    slow = [r for r in caplog.records if r.getMessage() == "haproxy_reload_slow"]
    assert len(slow) == (how == "hung")  # (stopped: never said to be re-executing)


def test_a_master_without_proc_is_not_waited_for_past_the_timeout(clock, master):
    wait = ReloadWait(10.0, BEFORE, master=99)  # (/proc says nothing: gone)
    clock[0] += 10.0
    assert not wait.goes_on(alive=True)


async def test_no_look_outlasts_the_wait(clock):
    """A stopped process's socket takes the connection and never answers: each look held
    the socket timeout (5 s), past a 2 s reload_timeout."""
    wait = ReloadWait(0.05, BEFORE)  # (left: at least MIN_LOOK, 0.1 s)

    async def never() -> dict[str, str]:
        await asyncio.sleep(60)
        return {}

    async with asyncio.timeout(5):
        with pytest.raises(SocketUnavailable):
            await wait.ask(never)
        assert not await serves(types.SimpleNamespace(info=never), 12, wait)  # type: ignore[arg-type]
