"""The controller's reloads (``HAProxyController`` inherits them): the reload gate's
decision on a candidate, the reload itself (validate, dump the server states, install),
what follows it (read and plan the new process), a refused candidate, and the changes
of servers that go in beside a reload (``reload_window``).

Moved out of ``synapse.haproxy.controller`` as they were; they use its state and steps,
declared below for the reader and the type checker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from synapse.config import HAProxyConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.bridge import Layout, build_bridge
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.confirm import NOT_DIFFERENCES, ReloadCheck, read_at_once
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.failures import Failures
from synapse.haproxy.file_match import differences, say_not_served
from synapse.haproxy.installer import SERVE_FILE, Installer, InstallFailed
from synapse.haproxy.managed import ManagedHAProxy
from synapse.haproxy.ops import Op, Plan, Reload
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.reload_gate import GateDecision, ReloadGate
from synapse.haproxy.reload_window import ReloadWindow, UnderWay, leaving, merged
from synapse.haproxy.running import Capabilities, RunningState
from synapse.haproxy.status import HAProxyStatus

log = logging.getLogger("synapse.haproxy")


class Reloading:
    """The reload steps of ``HAProxyController`` (a mixin: its state, its other steps)."""

    config: HAProxyConfig
    info: HAProxyStatus
    _clock: Callable[[], float]
    _managed: ManagedHAProxy | None
    _installer: Installer
    _reader: RunningReader
    _gate: ReloadGate
    _check: ReloadCheck
    _pending: PendingReload
    _failures: Failures
    _window: ReloadWindow
    _stopping: bool
    _acked: float | None  # HAProxy answered this apply's first commands
    _apply_began = 0.0  # (time.monotonic) the apply under way began
    _unserved: list[str] = []  # why the file was not served at the last try (said once)
    _ran = False  # a HAProxy ran since synapse started (adopted, started, revived)
    # hears the end of every apply, a background one's too (the pending reload, the sweep,
    # a restart): the reconciler's ``after_apply`` hears its own only (synapse.last_good_run)
    on_applied: Callable[[ApplyResult], None] | None = None

    if TYPE_CHECKING:  # (the controller's)

        async def _revive(self, reason: str = ...) -> bool: ...
        def _slow(self) -> ApplyResult: ...
        def _render(self, running: RunningState) -> DesiredConfig: ...
        def _plan(
            self, candidate: DesiredConfig, running: RunningState, reread: set[str] | None = None
        ) -> Plan | None: ...
        async def _run_ops(self, ops: Sequence[Op]) -> tuple[list[str], list[str]]: ...
        async def _apply_locked(self) -> ApplyResult: ...
        def _capabilities(self) -> Capabilities: ...
        def _layout(self) -> Layout: ...
        def _watch_process(self) -> None: ...

    def _told(self, result: ApplyResult) -> ApplyResult:
        if self.on_applied is not None:
            try:  # (a listener's bug must not fail an apply HAProxy has already run)
                self.on_applied(result)
            except Exception:
                log.exception("a listener of the apply's end failed")
        return result

    async def _need_reload(self, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        if not self.config.do_writes:
            self._failures.skipped("do_writes", reload.summary)
            return ApplyResult(reload=ApplyOutcome.DISABLED)
        down = self._managed is not None and not self._managed.alive
        decision = self._gate.decide(candidate.text, down)
        if decision is GateDecision.REFUSED:
            await self._revive_refused(candidate)
            error = self.info.validation_error
            return ApplyResult(reload=ApplyOutcome.INVALID, error=error and error["message"])
        if decision is GateDecision.SETTLED:
            error = "HAProxy still differs from this config after reloading it"
            return ApplyResult(reload=ApplyOutcome.FAILED, error=error)
        if decision is GateDecision.RELOAD:
            if not down and await self._reader.stalled(self._apply_began):
                self._reader.invalidate()  # (the next apply reads it: slow, or what changed)
                return self._slow()  # (a reload into a stalled worker: slow_socket)
            return await self._reload(reload, candidate)
        self._pending.wait_for_turn(reload, announce=True)
        return ApplyResult(reload=ApplyOutcome.PENDING)

    async def _reload(self, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        began = self._clock()
        if not self.config.do_reloads and self._managed is None:
            layout, failures = self._layout(), self._failures  # (do_reloads: false)
            return await self._installer.install_unreloaded(candidate, layout, reload, failures)
        starting = self._managed is not None and not self._managed.alive
        before = self._installer.file.parsed if self._installer.file else None
        if not starting:  # (something serves: changes of servers go in beside the reload)
            self._window.begin(self._installer.layout, before)
        try:
            result = await self._reload_steps(reload, candidate, began, starting, before)
        finally:
            changed = self._window.end()
        if changed and not self._stopping:  # the window's own desired state, at once
            result = merged(result, await self._apply_locked())
        return result

    async def _reload_steps(
        self,
        reload: Reload,
        candidate: DesiredConfig,
        began: float,
        starting: bool,
        before: ParsedConfig | None,
    ) -> ApplyResult:
        # Nothing served yet: the start checks the config (`haproxy -c` costs as much again).
        checked = not (starting and self._installer.start_checks)
        layout = self._layout()  # (the candidate's: a change beside it moves _desired on)
        try:  # (InstallFailed: also a check that gave no verdict, retried like a reload)
            async with self._window.opened():
                error = await self._installer.validate(candidate) if checked else None
            if error is not None:
                return await self._refused(error, reload, candidate)
            self.info.validation_error = None
            self._gate.validated(began)
            await self._installer.dump_server_state(self._reader.runtime_error is None)
            wrote = await self._installer.install(candidate, layout, checked, self._window.opened)
        except InstallFailed as err:
            if err.invalid:  # (unchecked: the start failed and `haproxy -c` says why)
                return await self._refused(str(err), reload, candidate)
            serve = starting and err.disk and await self._servable(candidate)  # (file_match)
            cap = 0.0 if serve and await self._revive(SERVE_FILE) else err.cap
            return self._failures.reload_failed(str(err), reload, began, err.unanswered, cap)
        self._watch_process()
        self._pending.clear()  # whatever waited is in this reload
        self._gate.reloaded()
        self._reader.invalidate()  # a new process: read all of it
        self._reader.version = None  # re-read: the binary may have been upgraded
        self._failures.reloaded(reload, self._clock() - began, starting)
        if self._window.reload is not None and self._window.reload.changed:
            # Changes went in beside it: the latest desired state is planned next (_reload),
            # not this candidate's older one (it would put a withdrawn server back).
            await self._reader.read(reloaded=True, serving=self._installer.serving_pid)
            self._check.begin(candidate.parts)
            return ApplyResult((), ApplyOutcome.DONE, (), wrote)
        return await self._after_reload(candidate, before, wrote)

    async def _after_reload(
        self, candidate: DesiredConfig, before: ParsedConfig | None, wrote: bool
    ) -> ApplyResult:
        """The new process's structure (pid, backends) against the candidate, and the servers
        of the backends this reload changed (``confirm.read_at_once``: states the state file
        restored may differ); the others are read and planned in the background (``confirm``)."""
        running = await self._reader.read(reloaded=True, serving=self._installer.serving_pid)
        now = read_at_once(before, candidate.parsed, self._reader.unread, self._installer.read_all)
        if running.backends is not None and (now is None or now):
            running = await self._reader.read(set(), now)  # (None: all of them)
        if running.runtime_slow:  # the new worker stalled: no further reload (slow_socket)
            self._check.begin(candidate.parts)  # (the sweep reads and plans it once it answers)
            return ApplyResult((), ApplyOutcome.DONE, (), wrote, error=self._slow().error)
        fresh = self._render(running)
        after = self._plan(fresh, running, reread=now or set())
        assert after is not None
        applied, failures = await self._run_ops(after.ops)
        written = self._installer.write(fresh, self._layout()) or wrote
        result = ApplyResult(tuple(applied), ApplyOutcome.DONE, (), written)
        if after.reload is not None and after.reload.kind in NOT_DIFFERENCES:
            # Reloaded, but nothing answers on the runtime socket (or the managed HAProxy is
            # down again): try again, backing off.
            failed = self._failures.reload_failed(after.reload.summary, after.reload, self._clock())
            return dataclasses.replace(result, error=failed.error)
        if after.reload is not None or failures:
            # Reloaded with this very config and it still differs: wait for the next change.
            detail = after.reload.summary if after.reload else "; ".join(failures)
            self._check.differs(candidate.parts, detail)
            return dataclasses.replace(result, error=f"still differs: {detail}")
        self._check.begin(candidate.parts)
        return result

    async def _servable(self, candidate: DesiredConfig) -> bool:
        """Whether the file on disk answers every port as ``candidate`` would (file_match);
        why not is said once per streak."""
        file, routes = self._installer.file, self._installer.edge.routes
        if file is None:
            return False
        args = file.path, candidate.parsed, routes.paths, routes.wanted
        differ = await asyncio.to_thread(differences, *args)
        if differ and differ != self._unserved:
            say_not_served(differ)
        self._unserved = differ or []
        return differ == []

    async def _refused(self, error: str, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        result = self._failures.invalid(error, reload.reasons, candidate.text)
        await self._revive_refused(candidate)
        return result

    async def _revive_refused(self, candidate: DesiredConfig) -> None:
        """The candidate is refused and the managed HAProxy is down: run the file on disk,
        unless no HAProxy has run since synapse started and the file (a previous run's,
        another config's) would answer a port otherwise than the candidate (``file_match``:
        a port moved to another service answered by the old one is worse than refused)."""
        if self._ran or (self._managed is not None and self._managed.alive):
            await self._revive()
        elif await self._servable(candidate):
            await self._revive("the file on disk: the new config is invalid (its ports the same)")

    async def _beside(self, reload: UnderWay) -> ApplyResult:
        """A change's apply while HAProxy reloads (``reload_window``): ``_desired``'s servers
        against the bridge of the file HAProxy ran before the reload, sent to whichever
        worker answers, and dumped into the server-state file (a new worker not started yet
        starts with them). No bridge (a server only a reload adds, no layout: synapse
        restarted over HAProxy): what can go in does, the servers that left go into
        maintenance (``leaving``). The reloading apply plans ``_desired`` once it is over."""
        reload.changed = True
        reader = self._reader
        running = await reader.read(reader.stale(), None)  # (and any unread since a reload)
        if running.backends is None:
            return ApplyResult(reload=ApplyOutcome.PENDING)  # (the reloading apply plans it)
        bridge = None
        if reload.before is not None:
            running = dataclasses.replace(running, config=reload.before)  # (what HAProxy runs)
            ids = reader.id_hints(running)
            # A server that left goes into maintenance, not deleted: the state file keeps it.
            caps = dataclasses.replace(self._capabilities(), remove_servers="maint")
            bridge = build_bridge(reload.layout, self._desired, running, ids, caps)
        ops = bridge.ops if bridge is not None else leaving(self._desired, running.backends)
        applied, failures = await self._run_ops(ops)
        if applied:
            await self._installer.dump_server_state(reader.runtime_error is None)
        error = "; ".join(failures) or None  # (planned again once the reload is over)
        # Every command answered: the change runs from then on (the reload is an older one's).
        whole = bridge is not None and not failures
        served = self._acked or time.monotonic() if whole else None
        return ApplyResult(tuple(applied), ApplyOutcome.PENDING, (), False, error, served_at=served)

    def _handed_back_failed(self, error: BaseException) -> None:
        """A reload whose round went on (``reload_window.hand_back``) raised: said, counted
        and retried like a failed reload (the reconciler no longer waits for it)."""
        text = f"{type(error).__name__}: {error}"[:500]
        log.error("applying to HAProxy failed after its round went on", exc_info=error)
        self._reader.invalidate()  # (what it did is unknown: read again)
        if not self._stopping:
            self._failures.reload_failed(text, Reload((("apply_failed", text),)), None)
