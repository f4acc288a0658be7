"""A managed HAProxy's stop with synapse: soft first, hard once ``managed.stop_grace`` ran out.

``ManagedHAProxy.stop`` against a stand-in master (a real process noting the signals it gets):
SIGUSR1 (HAProxy's soft stop: what is in flight may end) and nothing more when it exits
within the grace; SIGTERM (the hard stop) once the grace ran out, logged as a warning (what
was left was cut); SIGTERM at once with no grace (a failed start). Before, every stop was a
SIGTERM at once.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from haproxy_helpers import stand_in_managed

MASTER = textwrap.dedent("""
    import signal, sys, time
    out, exits_on = sys.argv[1], sys.argv[2].split(",")
    def note(sig, _frame):
        with open(out, "a") as f:
            f.write(signal.Signals(sig).name + "\\n")
        if signal.Signals(sig).name in exits_on:
            sys.exit(0)
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(sig, note)
    open(out, "a").write("ready\\n")
    time.sleep(60)
""")


async def _stop(tmp_path: Path, exits_on: str, grace: float, caplog) -> tuple[list[str], float]:
    """Signals the stand-in got, and how long the stop took."""
    out = tmp_path / "signals"
    haproxy = stand_in_managed(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", MASTER, str(out), exits_on],
                            start_new_session=True)  # fmt: skip
    haproxy._proc, haproxy.master_pid = proc, proc.pid
    for _ in range(3000):  # (until its handlers are set; a loaded machine starts slowly)
        if out.exists() and "ready" in out.read_text():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the stand-in master did not start")
    began = time.monotonic()
    with caplog.at_level(logging.INFO, logger="synapse.haproxy.managed"):
        await haproxy.stop(grace, "test")
    took = time.monotonic() - began
    assert proc.poll() is not None and haproxy.master_pid is None
    return out.read_text().split()[1:], took


async def test_a_soft_stop_is_all_it_takes_when_haproxy_ends_within_the_grace(tmp_path, caplog):
    signals, took = await _stop(tmp_path, "SIGUSR1", 30.0, caplog)
    assert signals == ["SIGUSR1"] and took < 10.0  # (no SIGTERM: it ended within the grace)
    assert _stopped(caplog) == ("soft", logging.INFO)


async def test_the_hard_stop_comes_once_the_grace_ran_out(tmp_path, caplog) -> None:
    signals, took = await _stop(tmp_path, "SIGTERM", 0.3, caplog)
    assert signals == ["SIGUSR1", "SIGTERM"] and took >= 0.3
    assert _stopped(caplog) == ("hard", logging.WARNING)  # (what was left was cut)


async def test_no_grace_is_a_hard_stop_at_once(tmp_path, caplog) -> None:
    signals, _took = await _stop(tmp_path, "SIGTERM", 0.0, caplog)
    assert signals == ["SIGTERM"]
    assert _stopped(caplog) == ("hard", logging.INFO)  # (no grace was asked for)


def _stopped(caplog) -> tuple[str, int]:
    """How the one ``haproxy_stopped`` logged says HAProxy ended, and its level."""
    stopped = [r for r in caplog.records if r.getMessage() == "haproxy_stopped"]
    assert len(stopped) == 1
    return stopped[0].smartstack_fields["how"], stopped[0].levelno
