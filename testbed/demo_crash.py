"""``make demo``'s HAProxy crash: its master and worker are killed (-9) while the client
sends requests. synapse sees the death at once and starts HAProxy again from its files;
meanwhile the listening sockets synapse holds (``managed.hold_listeners``) keep accepting,
and the new HAProxy takes them over: requests wait a few milliseconds instead of failing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from testbed.process import wait_until


def haproxy_crash(
    status: Callable[[], dict[str, Any]],
    client: Any,
    say: Callable[[str], None],
    detail: Callable[[str], None],
) -> int:
    """Kill the managed HAProxy, wait for the new one to serve; the requests that failed."""
    say("HAProxy crashes (kill -9 of its master and its worker)")
    held = status()["haproxy"].get("held_listeners") or []
    pids = status()["haproxy"]["haproxy_pids"]
    crashed = time.monotonic()
    for pid in (pids["master"], pids["worker"]):
        os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        master = status()["haproxy"]["haproxy_pids"]["master"]
        return master not in (None, pids["master"])

    wait_until(restarted, timeout=20, what="synapse to start HAProxy again", interval=0.01)
    back = time.monotonic() - crashed
    wait_until(  # (a dozen requests: ~0.5 s of the client's traffic)
        lambda: sum(1 for s in client.since(crashed + back) if s.backend) >= 12,
        timeout=20,
        what="traffic through the new HAProxy",
        interval=0.02,
    )
    failed = sum(1 for s in client.since(crashed) if s.backend is None)
    served = sum(1 for s in client.since(crashed) if s.backend is not None)
    detail(f"synapse started HAProxy again {back * 1000:.0f} ms after the crash")
    if held:
        detail(
            f"meanwhile synapse held HAProxy's listening sockets ({', '.join(held)}): "
            "connections waited in them, and the new HAProxy took them over"
        )
    else:
        detail("synapse held no listening sockets (see haproxy_listeners_not_held in its log)")
    detail(f"requests since the crash: {served} served, {failed} failed")
    return failed
