"""A reload that changes a registered service's record or registry, without a moment in
which the registry holds no registration for it (synapse would take the server out).

- Only the record changed (weight, labels, haproxy_server_options, host/port, instance
  id): the same reporter writes the new record over the old one (``change_record``; a
  node named after the old instance id is replaced by one named after the new, first).
- The registry settings changed: the new service registers first, then the old reporter
  withdraws what is still its own (``hand_over``); what the new one adopted, took over or
  overwrote (the same node or key) stays.

Which of the two a reload is, and whether the checks' verdict carries over, is decided in
nerve/reload_plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from nerve.registries import Registries
from nerve.service import Service

# The old registration (no longer checked) waits at most this long for the new one.
HANDOVER_TIMEOUT = 5.0
SETTLE_TIMEOUT = 1.0  # for a write in flight to answer before a reload decides


async def settled(service: Service) -> bool:
    """Whether the service's registration is known (no write in flight or unanswered), so
    that a new record can be written over it; waits a little for a write in flight."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(service.reporter.wait_in_sync(), SETTLE_TIMEOUT)
    return service.reporter.in_sync and not service.reporter.uncertain


async def hand_over(
    old: Service, new: Service, registries: Registries, start_new: bool = True
) -> None:
    """Start ``new``; once its registration is written (or after HANDOVER_TIMEOUT: a new
    registry out of reach must not keep the old, unchecked one long), retire ``old``'s."""
    await old.halt()
    if start_new:
        new.start()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(new.reporter.wait_written(), HANDOVER_TIMEOUT)
    await old.reporter.retire(successor=new.reporter if start_new else None)
    await registries.release(old.reporter)
