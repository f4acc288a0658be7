"""How the controller records a reload's outcome: done (a reload or a start), and what
went wrong: a refused candidate, a failed reload, a reload skipped by configuration.
Each is shown on /status (``info``), counted (``metrics``) and logged; a failure tells
the reload gate when to try again."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from smartstack.logs import event
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.status import HAProxyStatus

log = logging.getLogger("synapse.haproxy")


class Failures:
    """Records refusals and failures (``candidate_path``: where a refused candidate is kept,
    asked each time: a SIGHUP may change it)."""

    def __init__(
        self,
        info: HAProxyStatus,
        metrics: HAProxyMetrics,
        gate: ReloadGate,
        pending: PendingReload,
        candidate_path: Callable[[], Path | None],
    ) -> None:
        self._info, self._metrics, self._gate, self._pending = info, metrics, gate, pending
        self._candidate_path = candidate_path
        self._warned: set[str] = set()
        self._said: str | None = None  # the error a failed reload logged since the last success

    def reloaded(self, reload: Reload, elapsed: float, started: bool) -> None:
        """HAProxy reloaded (``started``: was started) with the candidate, in ``elapsed`` s."""
        kind = "start" if started else reload.kind
        self._said = None  # (the streak of failures is over)
        self._info.reloaded(kind, reload.summary, elapsed, started=started)
        self._metrics.reloads.labels(kind).inc()
        self._metrics.last_reload.set(time.time())
        event(log, "haproxy_started" if started else "haproxy_reloaded", kind=kind,
              reason=reload.summary, ms=round(elapsed * 1000, 1))  # fmt: skip

    def started_from_file(self, reason: str) -> None:
        """A managed HAProxy that was down runs the config file again (``reason``)."""
        self._info.starts += 1
        self._metrics.reloads.labels("start").inc()
        event(log, "haproxy_started", kind="start", level=logging.WARNING, reason=reason)

    def invalid(
        self, error: str, reasons: tuple[tuple[str, str], ...], candidate: str | None
    ) -> ApplyResult:
        """``candidate`` failed validation (or rendering): not retried until the desired
        state changes; the running config stays."""
        self._metrics.validation_failures.inc()
        kept = self._candidate_path()
        path = str(kept) if kept else None
        self._info.refused(error, path, [detail for _, detail in reasons])
        event(log, "haproxy_config_invalid", level=logging.ERROR, candidate=path, error=error,
              detail="the running config stays in place")  # fmt: skip
        self._gate.refuse(candidate)
        return ApplyResult(reload=ApplyOutcome.INVALID, error=error)

    def reload_failed(
        self,
        error: str,
        reload: Reload,
        began: float | None,
        unanswered: bool = False,
        cap: float | None = None,
    ) -> ApplyResult:
        """The reload begun at ``began`` (None: just now) did not take (``unanswered``: its
        config check gave no verdict): retried the gate's backoff (at most ``cap`` seconds)
        after now, its end; ``took_s`` says how long it ran (a hung command: its timeout)."""
        self._metrics.reload_failures.inc()
        now = self._gate.clock()
        backoff = self._gate.failed(cap)
        self._info.reload_failed(error, reload.summary, backoff)
        name = "haproxy_check_unanswered" if unanswered else "haproxy_reload_failed"
        # One line per streak of the same error (a full disk fails every retry for as long
        # as it lasts); /status and the failure counter still show every attempt.
        # (HAProxy's lines name its pid, "[ALERT] (16345) :": a start failing again is the
        # same error, every few seconds while its socket directory is read-only)
        same = re.sub(r"\(\d+\)", "(pid)", error)
        level = logging.DEBUG if same == self._said else logging.ERROR
        self._said = same
        took = round(now - (now if began is None else began), 1)
        event(log, name, level=level, error=error, reason=reload.summary,
              retry_in_s=round(backoff, 1), took_s=took)  # fmt: skip
        self._pending.wait_for_turn(reload)
        return ApplyResult(reload=ApplyOutcome.FAILED, error=error)

    def skipped(self, setting: str, detail: str) -> None:
        """A reload needed but ``setting`` (do_writes, do_reloads) is false: said once."""
        if setting not in self._warned:
            self._warned.add(setting)
            why = f"HAProxy needs a reload but {setting} is false"
            event(log, "haproxy_reload_skipped", level=logging.WARNING, why=why, detail=detail)
