"""HAProxy serves on for ``managed.stop_delay`` seconds after synapse's stop signal, when
synapse is going to stop it, before its soft stop (``managed.stop_grace`` after it).

A sidecar synapse stopped together with its app (a parallel ``docker stop``, a pod's end:
every container gets SIGTERM at once) soft-stopped HAProxy at the signal: its listeners
closed at once, and every request the app sent through it while it drained was refused
(500 of 500 in a 5 s drain). Meanwhile synapse runs on as before: the watchers and the
reconciler keep HAProxy's servers in step (a backend that stops at the same time is taken
out, not left to fail), /health answers 503 (stopping), and a second stop signal is logged
and changes nothing (``smartstack.stop_signals``: a third ends synapse at once).

``auto`` (the default) is AUTO_S where ``stop_on_exit: auto`` stops HAProxy because synapse
is its container's main process, and 0 elsewhere: on a host HAProxy outlives synapse (it
is left serving), and ``stop_on_exit: true`` was set by someone who chose when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from smartstack.logs import event
from synapse.config import ManagedHAProxy as ManagedConfig

if TYPE_CHECKING:
    from synapse.haproxy.managed import ManagedHAProxy

AUTO_S = 5.0  # an app's usual drain (+ stop_grace 8 + 1 s: a 15 s stop timeout, docs/docker.md)

log = logging.getLogger("synapse.stop_delay")


def stop_delay(config: ManagedConfig | None, reason: str | None) -> float:
    """Seconds HAProxy keeps serving after the stop signal; ``reason``: why synapse's exit
    stops HAProxy (``exit_policy.stop_reason``; None: it is left serving, no delay)."""
    if config is None or reason is None:
        return 0.0
    if config.stop_delay != "auto":
        return float(config.stop_delay)
    return AUTO_S if config.stop_on_exit == "auto" else 0.0


def planned_stop(config: ManagedConfig | None, haproxy: ManagedHAProxy | None) -> str | None:
    """Why synapse's exit will stop the managed HAProxy running now: the decision its stop
    takes (``release_or_stop``: with the master's pid, so one in another container is left
    serving); None: it is left serving, or none runs (it never started: nothing to delay)."""
    from synapse.haproxy.exit_policy import stop_reason

    if config is None or haproxy is None or not haproxy.alive:
        return None
    return stop_reason(config, haproxy.master_pid)


async def delay_stop(config: ManagedConfig | None, haproxy: ManagedHAProxy | None) -> None:
    """Wait ``stop_delay`` seconds (HAProxy serving, synapse running) before the stop."""
    reason = planned_stop(config, haproxy)
    delay = stop_delay(config, reason)
    if delay <= 0 or config is None:
        return
    event(log, "haproxy_stop_delayed", delay_s=delay, stop_grace=config.stop_grace,
          reason=reason, detail="HAProxy serves on (its servers kept in step), then its "
          "soft stop")  # fmt: skip
    await asyncio.sleep(delay)


def soft_stop_now(config: ManagedConfig | None, haproxy: ManagedHAProxy | None) -> None:
    """synapse is made to end at once (a forcing stop signal): a HAProxy it was going to stop
    gets SIGUSR1 (``pids.end_master``'s first step; again, if it had it): its listeners
    close and it ends once what is in flight has, rather than running on orphaned."""
    pid = haproxy.master_pid if haproxy is not None else None
    if pid is None or planned_stop(config, haproxy) is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
    event(log, "haproxy_soft_stop_sent", level=logging.WARNING, master_pid=pid,
          detail="synapse ends now: HAProxy ends once what is in flight has")  # fmt: skip
