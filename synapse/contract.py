"""The contracts between the reconciler/daemon and the outputs of synapse.

- ``Applier`` names every method the daemon and the reconciler call on the side that
  applies the desired state; the HAProxy controller
  (``synapse.haproxy.controller.HAProxyController``) implements it. One ``apply``
  returns an ``ApplyResult``, whose ``reload`` is an ``ApplyOutcome``.
- ``RecordSink`` is what the reconciler calls on an output of per-service records:
  Airbnb's ``file_output`` (``synapse.file_output.FileOutput``) implements it.

Two contracts, because the outputs need different things: the applier takes the
``DesiredService`` list of the HAProxy-enabled services and owns a lifecycle (start,
reload, flush, stop); a record sink takes every service's ``Selection`` (the backend
records as Airbnb writes them, including services with ``haproxy.disabled``), plus
which services it should cover, and has no lifecycle of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from synapse.change_gate import ChangeGate
from synapse.config import HAProxyConfig
from synapse.model import DesiredService
from synapse.selection import Selection


class ApplyOutcome(StrEnum):
    """What became of the reload one apply needed (the value labels metrics and /status)."""

    NONE = "none"  # no reload needed: applied at runtime (or nothing to do)
    DONE = "done"  # reloaded (or started) with the new config
    PENDING = "pending"  # a reload waits for its turn (rate limit, retry after a failure)
    INVALID = "invalid"  # the candidate was refused (validation, template): not installed
    FAILED = "failed"  # the reload failed (retried later), or HAProxy differs after it
    DISABLED = "disabled"  # a reload was needed, but do_writes / do_reloads are off

    @property
    def applied(self) -> bool:
        """HAProxy runs the desired state now, or will once the pending reload ran."""
        return self not in (ApplyOutcome.INVALID, ApplyOutcome.FAILED)


@dataclass(frozen=True)
class ApplyResult:
    """What one apply() did."""

    ops: tuple[str, ...] = ()  # runtime API commands applied
    reload: ApplyOutcome = ApplyOutcome.NONE
    reasons: tuple[str, ...] = ()  # why a reload was needed
    config_written: bool = False
    error: str | None = None
    # When HAProxy answered this apply's first runtime commands (time.monotonic; None:
    # none were sent): the end of synapse's own part of a change (the reconciler's trace).
    acked_at: float | None = None
    # PENDING, yet this round's changes of servers run in HAProxy since then (time.monotonic):
    # they went in beside a reload (synapse.haproxy.reload_window), every command answered.
    served_at: float | None = None
    # INVALID only because these services stay isolated (their refused block is not
    # applied: synapse.haproxy.isolation); everything else this apply needed went through.
    isolated: tuple[str, ...] = ()

    @property
    def reloaded(self) -> bool:
        return self.reload is ApplyOutcome.DONE


class Applier(Protocol):
    """What the daemon and the reconciler call on the HAProxy side."""

    change_gate: ChangeGate  # the reconciler's reports hold its background work back

    async def start(self) -> None:
        """Get ready (read what is on disk, adopt a running HAProxy); before any apply."""

    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        """Make HAProxy run ``desired``; never raises because of HAProxy."""

    async def update_config(self, config: HAProxyConfig) -> None:
        """Take a changed ``haproxy`` block (SIGHUP); ValueError when it cannot change live."""

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until no reload is pending and everything is on disk."""

    async def stop(self) -> None:
        """Stop background work (and a managed HAProxy)."""

    def status(self) -> dict[str, Any]:
        """JSON-ready, for /status."""

    def health(self) -> list[str]:
        """Why HAProxy does not run the desired state (empty: it does), for /health."""

    async def backend_servers(self, backend: str) -> dict[str, str] | None:
        """{server: state (UP, DOWN, MAINT...)} of ``backend`` in HAProxy now; None: no
        such backend. For /health/<service>."""

    async def servers_of(self, backends: Sequence[str]) -> dict[str, dict[str, str] | None]:
        """``backend_servers`` of each of ``backends``, read at once (one batch): for
        zone_health's look. All None when HAProxy does not answer."""


class RecordSink(Protocol):
    """What the reconciler calls on an output of per-service records (file_output)."""

    def update(self, selections: Mapping[str, Selection], enabled: Iterable[str]) -> list[str]:
        """Write the records of the ``enabled`` services among ``selections`` (those that
        changed since the last call); drop what the others left. Returns the services
        written. Blocking I/O is fine: the reconciler calls it in a thread."""
