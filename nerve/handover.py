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

The old registration stays until the new one is written, however long that takes (new
credentials not accepted yet, a typo, a new registry out of reach: ``handover_pending``
after HANDOVER_TIMEOUT): better an unchanged registration than none. It goes at once when
the new service no longer wants to be registered (a failing check, maintenance: then the
admin API answers once it is gone, ``Predecessor``) or is removed. An old registration
lost meanwhile (a registry outage longer than its lease or session) is written again by
its reporter, as at any other time. A later reload that replaces the waiting new service
passes the wait on to its replacement (``pass_on``).

A moved address (the checks moved with it) has nothing vouching for it yet: the new service
starts unregistered and needs ``rise`` passes, and meanwhile the old registration stays while
its own checks, still probing the old address, pass (``moved``): make before break, so a
fleet-wide move (every nerve SIGHUPed at once) never leaves the service registered nowhere.
It goes once the new one is written, or at once when its checks fail ``fall`` times (they
withdraw it, as at any time), on maintenance or removal. Until then the instance has two
records (two servers in synapse: ``host:port`` names them).

A registration withdrawn first (its state unknown: nerve/reload_steps.py) holds back a new
service at the same place at most HANDOVER_TIMEOUT (``after_retirement``): a withdrawal that
cannot be written (the old credentials no longer accepted) goes on beside it, deleting only
what is still its own.

Which of the two a reload is, and whether the checks' verdict carries over, is decided in
nerve/reload_plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from nerve.registries import Registries
from nerve.reporters.base import Reporter
from nerve.service import Service
from smartstack.logs import event
from smartstack.tasks import Wake

log = logging.getLogger("nerve.handover")

# After this long without the new registration written, the wait is logged as an error
# (and a withdrawal done first stops holding back the new service).
HANDOVER_TIMEOUT = 5.0
SETTLE_TIMEOUT = 1.0  # for a write in flight to answer before a reload decides
POLL = 0.05  # seconds between looks at a waiting hand-over (its conditions have no event)


async def settled(service: Service) -> bool:
    """Whether the service's registration is known (no write in flight or unanswered), so
    that a new record can be written over it; waits a little for a write in flight."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(service.reporter.wait_in_sync(), SETTLE_TIMEOUT)
    return service.reporter.in_sync and not service.reporter.uncertain


class Predecessor:
    """A hand-over's old registration, as its new service sees it (``Service.predecessor``)."""

    def __init__(self, reporter: Reporter, heir: Service | None, moved: bool = False) -> None:
        self.reporter = reporter
        self.heir = heir  # whose first write ends the wait (a later reload may replace it)
        # The heir is at a new address: it must rise first; the old checks run meanwhile.
        self.moved = moved
        self.cut = Wake()  # the new service entered maintenance: withdraw the old one now
        self.gone = asyncio.Event()  # withdrawn (or the hand-over ended)

    @property
    def kept_for_move(self) -> bool:
        """A move's old registration, kept while the new address rises (no maintenance):
        by design, so nothing waits for it to go."""
        return self.moved and not self.cut.is_set()


@dataclass
class Retirement:
    """A registration being withdrawn first by a reload (nerve/reload_steps.py ``_retire``)."""

    reporter: Reporter
    task: asyncio.Task[None]


async def hand_over(
    old: Service, new: Service, registries: Registries, start_new: bool = True, moved: bool = False
) -> None:
    """Start ``new``; once its registration is written (or ``new`` no longer wants one:
    ``_until_replaced``), retire ``old``'s. ``moved``: ``old`` keeps checking its address
    until then, and ``new`` must rise (``_outcome``)."""
    predecessor = Predecessor(old.reporter, new if start_new else None, moved)
    if start_new:
        new.predecessor = predecessor  # (from now on, maintenance sets ``cut``: Service._apply)
    try:
        if not moved:
            await old.halt()
        elif start_new:
            _log_move_started(old, new)
        if start_new:
            # Replaced from now on: the new reporter may take over the very node or key the
            # old one holds (a fixed name), which the old one must not take back or delete.
            old.reporter.successor = new.reporter
            new.start()
            if new.state.maintenance:  # entered before
                predecessor.cut.set()
            await _until_replaced(predecessor)
        if moved:
            await old.halt()  # (its checks vouched for it until now)
        heir = predecessor.heir
        await old.reporter.retire(successor=heir.reporter if heir is not None else None)
    finally:
        if old.running:  # (cancelled by a stop while the old checks ran)
            await old.halt()
        heir = predecessor.heir
        if heir is not None and heir.predecessor is predecessor:
            heir.predecessor = None
        predecessor.gone.set()
        if heir is not None and heir.running:
            # (the old reporter's withdrawal, after the heir's write, set the service's
            # `registered` gauge to 0; a move's old service had its `healthy`)
            heir.reporter.republish()
            heir.publish_gauges()
    await registries.release(old.reporter)


def pass_on(old: Service, new: Service | None) -> None:
    """A reload replaces ``old``, the new service of a hand-over whose registration is not
    written yet, by ``new`` (None: removed, or not built): the hand-over's old registration
    waits for ``new``'s write instead (a typo fixed by another SIGHUP never takes the
    working one out). What the old registration holds is not ``old``'s to withdraw."""
    predecessor = old.predecessor
    if predecessor is None or predecessor.heir is not old or _heir_written(predecessor, old):
        return
    old.predecessor, predecessor.heir = None, new
    if new is not None:
        new.predecessor = predecessor
        # (what ``new`` writes is not the old registration's, nor ``old``'s through it, to
        # delete: etcd's withdrawal follows the successors, EtcdReporter._delete_if_unchanged)
        predecessor.reporter.successor = new.reporter
        if new.state.maintenance:
            predecessor.cut.set()
    if new is None or new.reporter is not old.reporter:
        old.reporter.successor = predecessor.reporter


async def after_retirement(retired: Retirement, new: Service) -> None:
    """Until the registration withdrawn first at ``new``'s place is gone, at most
    HANDOVER_TIMEOUT: one whose withdrawal cannot be written (its credentials no longer
    accepted, its registry out of reach; most often gone already with its lease or
    session) must not keep ``new`` from ever registering. From then on the old reporter
    withdraws only what is still its own (``successor``), retrying beside the new one."""
    done, _ = await asyncio.wait({retired.task}, timeout=HANDOVER_TIMEOUT)
    if done:
        return
    old = retired.reporter
    if old.successor is None:
        old.successor = new.reporter
    event(log, "retire_pending", level=logging.WARNING, service=new.name, registry=old.kind,
          error=(old.last_error or "no answer yet")[:200], seconds=HANDOVER_TIMEOUT,
          detail="the new registration starts; the old one's withdrawal goes on")  # fmt: skip


async def _until_replaced(predecessor: Predecessor) -> None:
    """Until the old registration has to go: the heir's is written, or the heir no longer
    wants one (a failing check, maintenance, removed). Until then it is kept, however
    long (written again if its lease or session is lost meanwhile)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = False
    while True:
        late = loop.time() - started >= HANDOVER_TIMEOUT
        outcome = _outcome(predecessor)
        if outcome is not None:
            break
        if late and not pending and not predecessor.moved:  # (moved: service_not_registering)
            pending = True
            _log_pending(predecessor)
        await asyncio.sleep(POLL)
    if predecessor.moved:
        heir = predecessor.heir
        event(log, "address_move_done", service=heir.name if heir else predecessor.reporter.service,
              outcome=outcome, seconds=round(loop.time() - started, 3))  # fmt: skip
    elif pending:
        event(log, "handover_resolved", service=predecessor.heir.name if predecessor.heir
              else predecessor.reporter.service, outcome=outcome,
              seconds=round(loop.time() - started, 3))  # fmt: skip


def _outcome(predecessor: Predecessor) -> str | None:
    """Why the old registration goes now, or None while it stays."""
    heir = predecessor.heir
    if predecessor.cut.is_set():
        return "maintenance"
    if heir is None:
        return "withdrawn"
    if predecessor.moved:
        # Not risen yet is no reason, only the old address failing its own checks is
        # (they withdrew it: ``old_failed``); a new address that never rises leaves it.
        if not predecessor.reporter.wants:
            return "old_failed"
        return "written" if _heir_written(predecessor, heir) else None
    if not heir.reporter.wants:
        return "withdrawn"
    if _heir_written(predecessor, heir):
        return "written"
    # (an old registration lost with its lease or session is written again by its reporter
    # meanwhile: a registry outage is no reason to leave the service registered nowhere)
    return None


def _heir_written(predecessor: Predecessor, heir: Service) -> bool:
    """Whether ``heir`` has written its decision; at a moved address, that it is registered
    (its first verdicts, not risen yet, are decisions to stay out)."""
    written = heir.reporter.written
    return written and heir.reporter.registered if predecessor.moved else written


def _log_move_started(old: Service, new: Service) -> None:
    was, now = old.reporter.registration, new.reporter.registration
    event(log, "address_move_started", service=new.name, old=f"{was.host}:{was.port}",
          new=f"{now.host}:{now.port}",
          detail="the old registration stays until the new address is registered")  # fmt: skip


def _log_pending(predecessor: Predecessor) -> None:
    heir = predecessor.heir
    assert heir is not None  # (_outcome ends the wait without one)
    new = heir.reporter
    event(log, "handover_pending", level=logging.ERROR, service=heir.name, registry=new.kind,
          error=(new.last_error or "not written yet")[:200], seconds=HANDOVER_TIMEOUT,
          detail="the new registration is not accepted; the old one stays until it is")  # fmt: skip
