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
import logging

from smartstack.logs import event
from synapse.config import ManagedHAProxy as ManagedConfig

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


async def delay_stop(config: ManagedConfig | None) -> None:
    """Wait ``stop_delay`` seconds (HAProxy serving, synapse running) before the stop."""
    from synapse.haproxy.exit_policy import stop_reason

    reason = stop_reason(config)
    delay = stop_delay(config, reason)
    if delay <= 0 or config is None:
        return
    event(log, "haproxy_stop_delayed", delay_s=delay, stop_grace=config.stop_grace,
          reason=reason, detail="HAProxy serves on (its servers kept in step), then its "
          "soft stop")  # fmt: skip
    await asyncio.sleep(delay)
