"""How long a managed reload is waited for (``synapse.haproxy.reload_wait``): past
``reload_timeout`` only while the master says the reload is under way, and never past
SLOW_FACTOR times it. The clock is the test's."""

from __future__ import annotations

import logging
import types

import pytest

from synapse.haproxy import reload_wait
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.reload_wait import SLOW_FACTOR, ReloadWait, failed, under_way

BEFORE = ProcInfo(master_pid=10, reloads=3, failed_reloads=0, workers=(11,))
RELOADED = ProcInfo(master_pid=10, reloads=4, failed_reloads=0, workers=(12,), old_workers=(11,))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(reload_wait, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def test_a_master_that_does_not_answer_or_reloaded_without_failing_is_at_the_reload():
    assert under_way(True, None, BEFORE)  # re-executing: parsing the config
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


def test_a_reload_under_way_is_waited_for_past_the_timeout_up_to_the_cap(clock, caplog):
    caplog.set_level(logging.WARNING, logger="synapse.haproxy.managed")
    wait = ReloadWait(10.0, BEFORE)
    clock[0] += 9.9
    assert wait.goes_on(alive=True)
    clock[0] += 0.2  # past reload_timeout, the master re-executing (no answer)
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
