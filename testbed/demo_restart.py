"""``make demo``'s nerve restart act: one instance's nerve is killed (-9, as an OOM kill or a
crash would) and started again at once. Its registration is still valid (the etcd lease
outlives the process by its TTL), so the new nerve keeps it while its checks decide and
puts the same key again on its own lease: the instance never leaves HAProxy. (A nerve that
deleted the leftover first, as before, left it out for `rise` checks.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from testbed.process import ManagedProcess

POLL_S = 0.005  # how often HAProxy is asked whether the instance is in rotation
WATCH_S = 3.0  # after the restart: past the new nerve's start and its `rise` checks


def nerve_restart_act(
    nerve: ManagedProcess,
    name: str,
    in_rotation: Callable[[], bool],
    say: Callable[[str], None],
    detail: Callable[[str], None],
) -> float:
    """kill -9 ``nerve`` and start it again; the longest time its instance was out of
    HAProxy meanwhile (seconds)."""
    say(f"{name}'s nerve is killed (-9) and started again: its instance stays in HAProxy")
    if not in_rotation():
        raise RuntimeError(f"{name} is not in rotation before the act")
    longest, since = 0.0, None
    stop = threading.Event()

    def watch() -> None:
        nonlocal longest, since
        while not stop.wait(POLL_S):
            now = time.monotonic()
            if in_rotation():
                if since is not None:
                    longest, since = max(longest, now - since), None
            elif since is None:
                since = now

    watcher = threading.Thread(target=watch, name="nerve-restart-watch", daemon=True)
    watcher.start()
    try:
        old_pid = nerve.pid
        nerve.kill()
        nerve.start()
        detail(f"nerve pid {old_pid} killed, pid {nerve.pid} started with the same config")
        time.sleep(WATCH_S)
    finally:
        stop.set()
        watcher.join(5)
    if not nerve.alive:
        raise RuntimeError(f"the restarted nerve exited:\n{nerve.log_tail()}")
    if since is not None:
        longest = max(longest, time.monotonic() - since)
    detail(
        f"{name} out of HAProxy meanwhile: {longest:.3f} s (asked every {POLL_S * 1000:.0f} ms; "
        "the new nerve kept the previous registration while its checks decided)"
    )
    return longest
