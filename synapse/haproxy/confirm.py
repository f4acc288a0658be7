"""Whether HAProxy runs what synapse reloaded it with, checked backend by backend.

After a reload or a start synapse reads only the new process's pid and backend names
(a whole read and plan of 20,000 servers took ~300 ms under the controller's lock, on
the path of the first change): the structure is checked at once, the servers as the
background sweep (or an apply) reads and plans them, a part at a time. Until every
backend was planned once, a plan that still needs a reload (or whose commands failed)
for the very config just reloaded means HAProxy differs after reloading it: the gate
*settles* that candidate (reloading it again would loop) and it is logged, as when the
whole check ran right after the reload.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from smartstack.logs import event
from synapse.haproxy.reload_gate import ReloadGate

log = logging.getLogger("synapse.haproxy")


class ReloadCheck:
    """Whether HAProxy still differs from the config synapse just reloaded it with."""

    def __init__(self, gate: ReloadGate) -> None:
        self._gate = gate
        self._parts: tuple[str, ...] | None = None  # the reloaded config, while unchecked

    def begin(self, parts: Sequence[str]) -> None:
        """Reloaded with ``parts``, and its structure is what HAProxy runs: the servers
        are checked as they are read."""
        self._gate.settle(None)
        self._parts = tuple(parts)

    def differs(self, parts: Sequence[str], detail: str) -> None:
        """HAProxy still differs from ``parts`` after reloading it: not reloaded again for
        it (the gate settles it) until the desired state changes."""
        self._parts = None
        self._gate.settle("".join(parts))
        event(log, "haproxy_differs_after_reload", level=logging.ERROR, detail=detail)

    def planned(
        self, parts: Sequence[str], reasons: Sequence[tuple[str, str]], all_read: bool
    ) -> None:
        """A plan of ``parts`` needs a reload for ``reasons`` (empty: it does not);
        ``all_read``: no backend is left unread since the reload, the check is over."""
        reloaded = self._parts
        if reloaded is None:
            return
        if all_read:
            self._parts = None
        # A runtime socket that stopped answering is no difference: a reload retries it.
        found = [detail for kind, detail in reasons if kind != "runtime_unavailable"]
        if found and _same(tuple(parts), reloaded):
            self.differs(parts, "; ".join(found))


def _same(parts: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """Equal texts; cheap when the pieces are shared (the renderer reuses them)."""
    return parts == other or "".join(parts) == "".join(other)
