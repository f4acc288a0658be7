"""The last good copy follows HAProxy (synapse.last_good, docs/configuration.md "The last good
config"): a load's copy is kept pending and becomes the copy once HAProxy runs its config;
a start whose config HAProxy refuses as a whole, with no HAProxy serving, runs the copy.

Review s39: a file that validates but that ``haproxy -c`` refuses (an unknown keyword in
``haproxy.global``, a bad ``defaults`` line: no service to isolate) was kept as the last good
copy all the same; at a SIGHUP the running HAProxy stays, but after a reboot a managed
HAProxy never started when the config file on disk could not serve in its place
(``file_match``: a frontend the new file changed or removed): every service was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from synapse.contract import ApplyOutcome, ApplyResult

if TYPE_CHECKING:
    from synapse.config import SynapseConfig
    from synapse.daemon import SynapseDaemon
    from synapse.reconciler import Reconciler

# HAProxy runs the config (or synapse does not write HAProxy's: nothing to accept it)
ACCEPTED = (ApplyOutcome.NONE, ApplyOutcome.DONE, ApplyOutcome.DISABLED)


class CopyFollowsHAProxy:
    """The daemon's: ``applied`` is its reconciler's ``after_apply``; ``loaded``: the daemon
    took a config (its start's before the reconciler runs: review s39 cr-lastgood2, read at
    the first apply it was a SIGHUP's pending copy when that SIGHUP's load ended before the
    start's first apply did and was applied after it, so a config HAProxy then refused
    became the copy; a real run made it so with a SIGHUP 0.4-0.7 s after the spawn)."""

    def __init__(self, daemon: SynapseDaemon) -> None:
        self._daemon = daemon
        self._config: SynapseConfig | None = None  # the config of the load ...
        self._pending: str | None = None  # ... that wrote this pending copy
        self._served = False  # an apply of this process was run by HAProxy
        self._tried = False  # (the copy is run once: refused too, nothing is tried again)
        self._refused: SynapseConfig | None = None  # the start's config HAProxy refused
        self._awaiting = False  # its apply waits for a reload the controller runs later

    def attach(self, reconciler: Reconciler) -> None:
        """The start's config is loaded: its pending copy is known before any SIGHUP's."""
        reconciler.after_apply = self.applied
        self.loaded(self._daemon.config)

    def still_refused(self) -> bool:
        """Whether the daemon still runs the config whose refusal queued the copy's run (a
        SIGHUP queued before it on the reload lock ran over by the copy otherwise: review
        s39 cr-lastgood2, ``config_last_good_used`` said of a valid file HAProxy ran)."""
        return self._refused is not None and self._daemon.config is self._refused

    def loaded(self, config: SynapseConfig) -> None:
        """``config`` is the daemon's now (SIGHUP): its load's pending copy waits."""
        source = self._daemon.config_source
        self._config, self._pending = config, source.last_good.pending if source else None
        # a copy's run queued (or retried) and not loaded is over: a SIGHUP's config that
        # HAProxy refuses too, nothing served, runs it (the copy's own load: last_good.info)
        self._awaiting = self._tried = False

    def applied(self, config: SynapseConfig, result: ApplyResult) -> None:
        source = self._daemon.config_source
        if source is None or config is not self._config:  # (an apply of an older config)
            return
        if result.reload in ACCEPTED:
            self._accepted()
        elif result.reload in (ApplyOutcome.PENDING, ApplyOutcome.FAILED):
            self._awaiting = True  # (a reload waits, or is retried: the controller runs it)
            if hasattr(self._daemon.controller, "on_applied"):
                self._daemon.controller.on_applied = self._later
        elif (
            result.reload is ApplyOutcome.INVALID
            and not (self._served or self._tried)
            and source.last_good.enabled
            and source.last_good.info is None
            and self._haproxy_down()
        ):
            self._tried = True
            error = result.error or "HAProxy refused the config"
            self._refused = config
            self._run_copy([f"HAProxy refuses the config this file gives: {error}"[:2000]])

    def _later(self, result: ApplyResult) -> None:
        """The controller's own apply ended (the pending reload, a retry, the sweep): review
        s39 lastgood3, a SIGHUP's reload that waited for restart_interval was run by the
        controller, never reached ``applied`` and its copy stayed pending for good."""
        if self._awaiting and result.reload in ACCEPTED and self._daemon.config is self._config:
            self._accepted()

    def _accepted(self) -> None:
        source = self._daemon.config_source
        self._served, self._awaiting = True, False
        pending, self._pending = self._pending, None
        if source is not None:
            source.last_good.accepted(pending)

    def again(self, refused: list[str] | None) -> Callable[[], None] | None:
        """The retry of a copy's run whose config child could not start (ChildNotStarted:
        pids.max): that run again. Review s39 lastgood3: it was a SIGHUP's reload, which
        read the refused file again; the copy was never run and nothing was served."""
        return (lambda: self._run_copy(refused)) if refused else None

    def _haproxy_down(self) -> bool:
        managed = getattr(self._daemon.controller, "managed_haproxy", None)
        return managed is not None and not managed.alive

    def _run_copy(self, refused: list[str]) -> None:
        daemon = self._daemon
        task = asyncio.get_running_loop().create_task(daemon.reload_config(refused))
        daemon._background.add(task)  # (cancelled at stop, as a SIGHUP's reload)
        task.add_done_callback(daemon._background.discard)
