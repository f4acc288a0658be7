"""The restart stop (SIGUSR2): nerve ends, leaving its healthy registrations to the next one.

A stop (SIGTERM) withdraws everything at once: a stopping service must leave HAProxy
now. Restarting nerve that way (an upgrade) took every healthy instance out of every
synapse for the stop and the new nerve's ``rise`` checks (measured: 1.25 s with 3 x
0.5 s checks, ZooKeeper and etcd alike). A crash (kill -9) left no gap: its ZooKeeper
session and etcd lease outlive it for the session timeout or TTL, and the next nerve
holds such a previous run's registration while its checks decide (Reporter.holding).

The restart stop does what a crash does, cleanly: checks, admin server, Docker watch
stop as in a stop, but a registration standing for a healthy service (registered, not
in maintenance, not being replaced by a reload) is left where it is, and its ZooKeeper
session or etcd lease is dropped without closing or revoking it. Everything else is
withdrawn as in a stop. The log says what was left and for how long at most; without a
successor it goes by itself after that long.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from typing import Any

from nerve.reporters.base import Reporter
from nerve.service import Service
from smartstack.logs import event

log = logging.getLogger("nerve")

TAKEOVER_SLACK = 2.0  # seconds: the next nerve's start (its imports, the config's check)


def leaves(service: Service) -> bool:
    """Whether the restart stop leaves ``service``'s registration for the next nerve."""
    reporter = service.reporter
    return (
        service.state.wanted
        and reporter.desired
        and reporter.registered
        and not reporter.holding
        and not reporter.uncertain
        and reporter.successor is None
        and reporter.goes_by_itself  # a persistent znode left would stay for good
    )


def withdraws(reporter: Reporter, left: Collection[Reporter], restart: bool) -> bool:
    """Whether the stop withdraws ``reporter``'s registration. On a restart stop a previous
    run's registration still held (its checks undecided) is left untouched, as a kill -9
    would leave it: its own session or lease bounds it, and the next nerve holds it."""
    return reporter not in left and not (restart and reporter.holding)


def restart_despite(applying: int) -> bool:
    """Whether a restart stop may leave registrations: not while a SIGHUP reload applies a
    plan that changes ``applying`` of them (nerve/daemon.py ``close_reloads``). Cut half-way
    it may have removed or moved a service still among the daemon's, which would be left
    registered for a next nerve (on the new config) that has no such service; everything is
    withdrawn as on SIGTERM instead. A reload not applying anything yet (waiting, reading
    the file in its child) or whose plan changes nothing is dropped: the registrations are
    left as usual (review s32: a SIGHUP of an unchanged file 0.1 s before withdrew all).
    """
    if applying:
        event(log, "restart_stop_withdraws_all", level=logging.WARNING, changes=applying,
              detail="a SIGHUP reload was changing registrations: what it changes cannot be "
              "left; withdrawn as on SIGTERM")  # fmt: skip
    return not applying


def left_by(services: Iterable[Service], restart: bool) -> list[Reporter]:
    """The reporters whose registrations a stop leaves (none but on a restart stop)."""
    return [s.reporter for s in services if restart and leaves(s)]


def at_most(reporter: Reporter) -> float:
    """Seconds the registration lasts without anyone renewing it: the ZooKeeper session
    timeout the server granted (not the one asked: a server bounds it, e.g. 4 s of 30 s
    asked) or the etcd lease's TTL."""
    held: Any = reporter
    if reporter.kind == "zookeeper":
        return float(held.conn.session.seconds)
    return float(held.keeper.ttl)


def log_left(left: list[Reporter], services: Iterable[Service] = ()) -> None:
    """One line: what was left, and for how long at most (and one if that may be short)."""
    if not left:
        return
    _warn_short_sessions(left, services)
    seconds = max(at_most(r) for r in left)
    event(log, "registrations_left", services=",".join(sorted(r.service for r in left)),
          registries=",".join(sorted({r.kind for r in left})), expire_within_s=round(seconds, 1),
          detail="restart stop: left for the next nerve to take over; gone by themselves "
          "after expire_within_s (session timeout / lease TTL) if none does")  # fmt: skip


def takeover_needs(service: Service) -> float:
    """Seconds a next nerve needs to write its own registration: start, then ``rise``
    check rounds."""
    rise = max((t.rise for t in service.state.trackers.values()), default=1)
    return rise * service.check_interval + TAKEOVER_SLACK


def _warn_short_sessions(left: list[Reporter], services: Iterable[Service]) -> None:
    """ZooKeeper cannot renew another client's session (etcd renews a left lease): a left
    znode goes with the session timeout unless the next nerve has written its own by then."""
    zk = [s for s in services if s.reporter in left and s.reporter.kind == "zookeeper"]
    short = sorted(s.name for s in zk if at_most(s.reporter) < takeover_needs(s))
    if short:
        event(log, "restart_stop_session_short", level=logging.WARNING, services=",".join(short),
              detail="the granted session < rise x check_interval + 2 s: the next nerve may not "
              "write its own node before the left one expires (a gap in HAProxy)")  # fmt: skip
