"""A service served its previous list because its discovery lists no server: said.

``use_previous_backends`` (the default, Airbnb's) keeps a service's last servers when its
discovery's list gives it none: a registry glitch must not empty a backend. Kept for long,
though, it is a frozen list from a discovery that lists nothing (every instance withdrawn,
a path emptied, or a held SIGHUP swap or restart hold that ended on a typo: review s28),
and HAProxy runs what synapse wants, so /health said nothing was off. So while a service's
latest complete list gives no server and its selection is the previous list (``previous``,
or a restarted synapse's ``state_file`` list), /health lists it under ``degraded`` and it is
logged once (``previous_backends_kept``), until its discovery lists a server again or it
is no longer served so (``previous_backends_kept_ended``).

Not while a restart hold serves the state file (``restart_discovery_held`` says it; its
end starts this), nor for label_filters that drop every record (``label_filters_match_nothing``
says it, the previous list as its effect), nor for a partial report (a union's silent child).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container

from smartstack.logs import event
from synapse.model import Report
from synapse.selection import ORIGIN_PREVIOUS, ORIGIN_STATE_FILE, Selection, no_server_reason

log = logging.getLogger("synapse.reconciler")

KEPT_ORIGINS = (ORIGIN_PREVIOUS, ORIGIN_STATE_FILE)


class PreviousKept:
    """The services served their previous list while their discovery lists no server."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.since: dict[str, tuple[float, int]] = {}  # service -> (since, servers served)

    def observe(
        self, name: str, report: Report | None, selection: Selection, held: Container[str]
    ) -> None:
        """A service selected (``held``: the services a restart hold serves, said apart)."""
        if report is None or report.partial:
            return  # (not heard from, or a union's silent child: nothing known of the list)
        why = no_server_reason(report.found, report.filters or ())
        kept = (why is not None and not selection.unmatched and bool(selection.servers)
                and selection.origin in KEPT_ORIGINS)  # fmt: skip
        if kept and name in held:
            return  # (the restart hold's own line says it; its end starts this)
        if kept and name not in self.since:
            self.since[name] = (self._clock(), len(selection))
            event(log, "previous_backends_kept", level=logging.WARNING, service=name,
                  servers=len(selection), origin=selection.origin, reason=why)  # fmt: skip
        elif kept:
            self.since[name] = (self.since[name][0], len(selection))
        elif name in self.since:
            started, _ = self.since.pop(name)
            ended = ("the discovery lists a server" if why is None else
                     f"served from {selection.origin} now" if selection.servers
                     else "no server now")  # fmt: skip
            event(log, "previous_backends_kept_ended", service=name, reason=ended,
                  kept_s=round(self._clock() - started, 1))  # fmt: skip

    def retain(self, configured: Container[str]) -> None:
        """A SIGHUP removed services: their kept lists end (soak s45: a removed name
        stayed for the process's life, and came back with its old ``since``)."""
        for name in [n for n in self.since if n not in configured]:
            started, _ = self.since.pop(name)
            event(log, "previous_backends_kept_ended", service=name,
                  reason="the service left the config",
                  kept_s=round(self._clock() - started, 1))  # fmt: skip

    def degraded(
        self,
        configured: Container[str],
        said: Container[str] = (),
        lost: Callable[[str], str | None] = lambda name: None,
    ) -> list[str]:
        """For /health: the services still ``configured`` and not ``said`` already (a held
        SIGHUP swap's line names the old list's emptiness). ``lost(name)``: why the service's
        watcher is not connected (None: it is), whose last list may be stale since."""
        now = self._clock()
        lines = []
        for name, (since, count) in sorted(self.since.items()):
            if name not in configured or name in said:
                continue
            why = lost(name)
            # A watcher without its watch may have missed the registry listing servers again
            # (review s29: "lists no servers" while etcd held 3 and the watch was down).
            listed = ("the discovery lists no servers" if why is None else
                      f"the discovery's last list had no servers, and its watch is down "
                      f"({why[:120]}): the registry may list some now")  # fmt: skip
            lines.append(f"{name}: {listed}; serving the previous list ({count} servers, "
                         f"use_previous_backends) since {round(now - since, 1)} s")  # fmt: skip
        return lines
