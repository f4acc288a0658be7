"""``make demo``'s nerve restart act: one instance's nerve is upgraded in place with the
restart stop (SIGUSR2: it exits 0 leaving its healthy registration, its etcd lease not
revoked) and started again at once, as `systemctl kill --kill-whom=main --signal=SIGUSR2
nerve && systemctl restart nerve` does (docs/deploy.md). The registration is still valid
(the lease outlives the process by its TTL), so the new nerve keeps it while its checks
decide and puts the same key again on its own lease: the instance never leaves HAProxy.
(A SIGTERM withdraws it: out for the new nerve's `rise` checks, ~1.25 s in review s26; a
kill -9 or a crash leaves it as the restart stop does.)

The config management run before it pushed a misspelt key (``chek_interval``): the new nerve
starts on that file and, instead of exiting 2 (a crash loop with every registration gone),
runs the last config that validated (``config_last_good_used``); the fixed file comes back
by SIGHUP (``config_last_good_left``)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from testbed.process import ManagedProcess

POLL_S = 0.005  # how often HAProxy is asked whether the instance is in rotation
WATCH_S = 3.0  # after the restart: past the new nerve's start and its `rise` checks


def nerve_restart_act(
    nerve: ManagedProcess,
    config: Path,
    name: str,
    in_rotation: Callable[[], bool],
    say: Callable[[str], None],
    detail: Callable[[str], None],
) -> float:
    """Restart-stop ``nerve`` (SIGUSR2) and start it again; the longest time its instance
    was out of HAProxy meanwhile (seconds)."""
    say(f"{name}'s nerve is upgraded in place (SIGUSR2, the restart stop, then a new nerve) "
        "onto a config with a typo: its instance stays in HAProxy")  # fmt: skip
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
        os.kill(old_pid, signal.SIGUSR2)  # (nerve alone, not its exec checks: --kill-whom=main)
        code = nerve.wait(10)
        if code != 0:
            raise RuntimeError(f"the restart stop exited {code}:\n{nerve.log_tail()}")
        nerve.kill()  # (reaps what is left of its process group: nothing, normally)
        good = config.read_text()
        config.write_text(good.replace('"check_interval"', '"chek_interval"', 1))
        nerve.start()
        detail(f"nerve pid {old_pid} exited 0 leaving its registration, pid {nerve.pid} "
               "started on the file with a typo (chek_interval)")  # fmt: skip
        time.sleep(WATCH_S)
        said = "config_last_good_used" in nerve.log_tail(200)
        detail(f"the new nerve runs its last good config: {'said' if said else 'NOT said'} "
               "(config_last_good_used: the file, its error, the copy's time)")  # fmt: skip
        config.write_text(good)
        os.kill(nerve.pid, signal.SIGHUP)  # (the fix pushed: loaded as any valid file)
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
