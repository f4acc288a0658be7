"""A reload that changes a registered service's record or registry, without a moment in
which the registry holds no registration for it (synapse would take the server out).

- Only the record changed (weight, labels, haproxy_server_options, host/port, instance
  id): the same reporter writes the new record over the old one (``change_record``; a
  node named after the old instance id is replaced by one named after the new, first).
- The registry settings changed: the new service registers first, then the old reporter
  withdraws what is still its own (``hand_over``); what the new one adopted, took over or
  overwrote (the same node or key) stays. From the start of the hand-over the old reporter
  writes nothing back (its ``successor`` is set): with a fixed name the new node replaces
  the old one, which taking it back would start a tug of war.

Maintenance entered during a hand-over (``nerve maint``, which reaches the new service)
ends the wait at once: the old registration is withdrawn then, not up to
HANDOVER_TIMEOUT later, and the admin API answers once it is gone (``Predecessor``).

Which of the two a reload is, and whether the checks' verdict carries over, is decided in
nerve/reload_plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib

from nerve.registries import Registries
from nerve.reporters.base import Reporter
from nerve.service import Service
from smartstack.tasks import Wake, cancel_and_wait

# The old registration (no longer checked) waits at most this long for the new one.
HANDOVER_TIMEOUT = 5.0
SETTLE_TIMEOUT = 1.0  # for a write in flight to answer before a reload decides


async def settled(service: Service) -> bool:
    """Whether the service's registration is known (no write in flight or unanswered), so
    that a new record can be written over it; waits a little for a write in flight."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(service.reporter.wait_in_sync(), SETTLE_TIMEOUT)
    return service.reporter.in_sync and not service.reporter.uncertain


class Predecessor:
    """A hand-over's old registration, as its new service sees it (``Service.predecessor``)."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.cut = Wake()  # the new service entered maintenance: withdraw the old one now
        self.gone = asyncio.Event()  # withdrawn (or the hand-over ended)


async def hand_over(
    old: Service, new: Service, registries: Registries, start_new: bool = True
) -> None:
    """Start ``new``; once its registration is written (or after HANDOVER_TIMEOUT: a new
    registry out of reach must not keep the old, unchecked one long; or at once when
    ``new`` enters maintenance), retire ``old``'s."""
    predecessor = Predecessor(old.reporter)
    if start_new:
        new.predecessor = predecessor  # (from now on, maintenance sets ``cut``: Service._apply)
    try:
        await old.halt()
        if start_new:
            # Replaced from now on: the new reporter may take over the very node or key the
            # old one holds (a fixed name), which the old one must not take back or delete.
            old.reporter.successor = new.reporter
            new.start()
            if new.state.maintenance:  # entered before
                predecessor.cut.set()
            await _written_or_cut(new, predecessor.cut)
        await old.reporter.retire(successor=new.reporter if start_new else None)
    finally:
        if new.predecessor is predecessor:
            new.predecessor = None
        predecessor.gone.set()
    await registries.release(old.reporter)


async def _written_or_cut(new: Service, cut: Wake) -> None:
    waits = [asyncio.ensure_future(new.reporter.wait_written()), asyncio.ensure_future(cut.wait())]
    try:
        await asyncio.wait(waits, timeout=HANDOVER_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            await cancel_and_wait(waiting)
