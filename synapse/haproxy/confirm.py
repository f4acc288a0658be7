"""Whether HAProxy runs what synapse reloaded it with, checked backend by backend.

After a reload or a start synapse reads only the new process's pid and backend names
(a whole read and plan of 20,000 servers took ~300 ms under the controller's lock, on
the path of the first change): the structure is checked at once, the servers as the
background sweep (or an apply) reads and plans them, a part at a time. Until every
backend was planned once, a plan that still needs a reload (or whose commands failed)
for the very config just reloaded means HAProxy differs after reloading it: the gate
*settles* that candidate (reloading it again would loop) and it is logged, as when the
whole check ran right after the reload. The backends the reload itself changed (a
few, typically) are read and planned at once by the reloading apply (``read_at_once``):
states the server-state file restored there may differ from the ones just rendered
(a weight, a server back from maintenance), and waiting for the sweep's part would
serve them wrong for a second or two.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from smartstack.logs import event
from synapse.haproxy.configtext import PROXY_KINDS, ParsedConfig
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.view import SWEEP_PART

log = logging.getLogger("synapse.haproxy")
NOT_DIFFERENCES = frozenset({"runtime_unavailable", "start"})  # reload kinds (``planned``)


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
        # A runtime socket that stopped answering is no difference: a reload retries it;
        # nor is a managed HAProxy that went down (a start: ``Installer.unconfirmed``).
        found = [detail for kind, detail in reasons if kind not in NOT_DIFFERENCES]
        if found and _same(tuple(parts), reloaded):
            self.differs(parts, "; ".join(found))


def _same(parts: tuple[str, ...], other: tuple[str, ...]) -> bool:
    """Equal texts; cheap when the pieces are shared (the renderer reuses them)."""
    return parts == other or "".join(parts) == "".join(other)


def read_at_once(
    before: ParsedConfig | None,
    after: ParsedConfig,
    unread: Collection[str],
    old_states: bool = False,
) -> set[str] | None:
    """The backends a reload from ``before`` to ``after`` must read and plan at once, of
    the ``unread`` ones (None: all of them, a small config: no more than a sweep's part).
    Without ``before`` (a first start) the background sweep reads them all. ``old_states``:
    the new process took an older server-state file (the dump could not replace it), so
    any backend may run states from then."""
    if len(unread) <= SWEEP_PART or old_states:
        return None
    if before is None:
        return set()
    return changed_proxies(before, after) & set(unread)


def changed_proxies(before: ParsedConfig, after: ParsedConfig) -> set[str]:
    """The backend/listen sections of ``before`` whose lines or servers differ in
    ``after`` (a new one has no state in the state file: it runs as rendered). A few ms
    at 20,000 servers: the lines are tuples compared in C, shared pieces by identity."""
    old = before.proxies
    changed = {
        p for p, lines in after.servers.items() if p in old and before.servers.get(p) != lines
    }
    for header, lines in after.sections.items():
        was, tokens = before.sections.get(header), header.split()
        if was is not None and was != lines and tokens[0] in PROXY_KINDS:
            changed.update(tokens[1:2])  # (same header: a proxy ``before`` has)
    return changed
