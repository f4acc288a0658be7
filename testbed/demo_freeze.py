"""``make demo``'s freeze act: one instance's nerve is frozen (SIGSTOP, as a VM pause or a
long stall stops a whole host) past its etcd lease, and its app turns unhealthy meanwhile.

The lease expires: the instance leaves HAProxy. On resume nerve's last verdict is from
before the freeze; it notices its own stall (``checks_stale``) and checks again before it
writes the registration back, so the unhealthy app never returns to HAProxy. Before, it
was written back within ~0.1 s on the old verdict and served until ``fall`` failed it
(review s29: 5 of 8,883 requests failed, each after 5 s). Once the app is healthy again,
the fresh checks bring it back.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.process import wait_until

if TYPE_CHECKING:
    from testbed.demo import Demo

POLL_S = 0.005  # how often HAProxy is asked whether the instance is in rotation
RESUMED_S = 2.0  # watched after the resume: nerve's fresh round and well past it


def _time_in_rotation(in_rotation: Callable[[], bool], seconds: float) -> float:
    """How long, over ``seconds``, the instance was in HAProxy (polled every POLL_S)."""
    inside, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        if in_rotation():
            inside += POLL_S
        time.sleep(POLL_S)
    return inside


def freeze_act(demo: Demo, name: str, say: Callable[[str], None],
               detail: Callable[[str], None]) -> float:  # fmt: skip
    """Freeze ``name``'s nerve past its lease with its app unhealthy, resume it; the time
    the instance was in HAProxy after the resume (seconds)."""
    nerve, backend = demo.nerves[name], demo.backends[name]

    def serving() -> bool:
        return demo._in_rotation(backend.port)

    say(f"{name}'s host freezes: its nerve is stopped (SIGSTOP) past its 5 s etcd lease, and "
        f"{name} turns unhealthy meanwhile")  # fmt: skip
    if not serving():
        raise RuntimeError(f"{name} is not in rotation before the act")
    started = time.monotonic()
    os.kill(nerve.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not serving(), timeout=20, what="the lease to expire", interval=0.05)
        detail(f"its lease expired: {name} out of HAProxy {time.monotonic() - started:.1f} s "
               "into the freeze")  # fmt: skip
        backend.set_healthy(False)
        time.sleep(0.5)
    finally:
        os.kill(nerve.pid, signal.SIGCONT)
    inside = _time_in_rotation(serving, RESUMED_S)
    stale = re.search(r"event=checks_stale .*?gap_s=([\d.]+)", nerve.log_path.read_text())
    gap = f"{stale.group(1)} s" if stale else "(not logged)"
    detail(f"resumed: nerve noticed its stall (checks_stale, gap {gap}) and checked again: "
           f"{name} in HAProxy after the resume: {inside:.3f} s")  # fmt: skip
    backend.set_healthy(True)
    healthy = time.monotonic()
    wait_until(serving, timeout=20, what=f"{name} back in rotation", interval=0.02)
    detail(f"{name} healthy again: back in HAProxy after {time.monotonic() - healthy:.2f} s "
           "(its fresh checks' rise)")  # fmt: skip
    failed = sum(1 for s in demo.client.since(started) if s.backend is None)
    detail(f"freeze act: failed requests {failed}")
    return inside
