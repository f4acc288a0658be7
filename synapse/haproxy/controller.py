"""The HAProxy controller: makes HAProxy run the desired services, at runtime when it can.

It implements ``synapse.contract.Applier``. One apply costs what changed, not the size of
the fleet, and reads as a flow whose steps live in modules of their own:

1. the running state (``reader``): the config file as written, and the runtime state
   (read only where commands changed it and nothing read it since);
2. render the candidate (``render``): only changed services are rendered again; a change of
   servers only sends its commands first (``express``: planned from the specs, no text);
3. plan (``planner``) those differences, only in backends that changed since;
4. no reload needed: run the runtime operations, one batch per socket (``executor``; a failed
   one turns into a reload) and write the config file's new text (in the background);
5. reload needed: the reload gate (``reload_gate``) says now, later (coalesced, ``pending``)
   or never for this candidate; ``installer`` validates, swaps the file, reloads, confirms
   (the controller's steps of a reload: ``reloading``); while it runs, changes of servers
   go in beside it (``reload_window``).

While a reload waits, fails or is refused, runtime ops are planned against the ``bridge``
(the file's structure, today's servers): the file says what HAProxy runs; a managed HAProxy
that dies starts from it; a sweep corrects drift; ``apply`` never raises (``status()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from smartstack.logs import event
from synapse.config import HAProxyConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.bridge import Bridge, Layout, build_bridge
from synapse.haproxy.came_back import CRASHED, revive_reason
from synapse.haproxy.confirm import ReloadCheck
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.dns_addresses import ADDRESSES
from synapse.haproxy.executor import run_ops
from synapse.haproxy.express import Express
from synapse.haproxy.failures import Failures
from synapse.haproxy.first_answer import answer_look
from synapse.haproxy.health import problems
from synapse.haproxy.installer import Installer
from synapse.haproxy.isolation import Isolation
from synapse.haproxy.managed import ManagedHAProxy, Supervisor
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op, Plan, Reload
from synapse.haproxy.owed import OwedRender
from synapse.haproxy.panic_watch import panic_watch
from synapse.haproxy.pending import PendingReload
from synapse.haproxy.planner import plan
from synapse.haproxy.port_taken import PortWait
from synapse.haproxy.reader import RunningReader
from synapse.haproxy.reload_gate import ReloadGate
from synapse.haproxy.reload_window import ReloadWindow
from synapse.haproxy.reloading import Reloading
from synapse.haproxy.render import Renderer
from synapse.haproxy.revive import revived
from synapse.haproxy.running import Capabilities, RunningState
from synapse.haproxy.runtime import kept_clients
from synapse.haproxy.settings import binary_version, restart_needed, running_settings, settings_for
from synapse.haproxy.statedump import state_dumper
from synapse.haproxy.status import HAProxyStatus, run_mode
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")

START_TIMEOUT = 15.0


class HAProxyController(Reloading):
    """``synapse.contract.Applier`` for HAProxy (see the module docstring)."""

    def __init__(
        self,
        config: HAProxyConfig,
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.settings = settings_for(config)
        self.metrics = HAProxyMetrics(registry, self.health, lambda: self.info)  # (gauges)
        self._isolation = Isolation(registry, lambda: (self.config, self._installer.file))
        self._clock = clock
        self._renderer: Renderer | None = None
        self._runtime = kept_clients(self.settings.runtime_sockets)
        self._managed: ManagedHAProxy | None = None
        self._supervisor: Supervisor | None = None
        if self.settings.managed:
            self._managed = ManagedHAProxy(self.settings, START_TIMEOUT, config.reload_timeout)
            self._supervisor = Supervisor(
                self._managed, self._restart_after_exit, lambda: self.config.restart_interval, clock
            )
        self._panic = panic_watch(self._managed, self.metrics, lambda: self._desired)
        self._lock = asyncio.Lock()
        ports = PortWait.of(self._isolation, self._managed, self._lock, self._apply_locked)
        self._installer = Installer(config, self.settings, self._runtime, self._managed,
                                    self.metrics, clock, ports)  # fmt: skip
        self._reader = RunningReader(self._runtime, self._installer.file, clock,
                                     managed=self.settings.managed)  # fmt: skip
        self._dumper = state_dumper(self.settings, self._runtime, self._managed, self._reader,
                                    writes=config.do_writes)  # fmt: skip
        kept = [self._reader.release, *(d.runtime.release for d in [self._dumper] if d)]
        self._installer.releases += kept  # (released with its own after a reload)
        self._gate = ReloadGate(config.restart_interval, config.restart_jitter, clock, rng)
        self._check = ReloadCheck(self._gate)
        self._express = Express(self._reader, self._capabilities, self._run_ops)
        self._acked: float | None = None  # HAProxy answered this apply's first commands
        # The last runtime commands got no answer, HAProxy being slow (slow_socket.is_slow) for
        # less than slow_socket.SLOW_LIMIT: the apply ends (``_slow``), no re-plan, no reload.
        self._slow_commands = False
        self._desired: list[DesiredService] = []
        self._applied = False  # apply() was called: _desired is real
        look = answer_look(self.settings)  # (HAProxy's first answer after an outage)
        self._pending = PendingReload(self._gate, self._lock, self._apply_locked, self.metrics,
                                      look)  # fmt: skip
        self.change_gate = self._reader.change_gate  # (the reconciler's: changes go first)
        self._window = ReloadWindow(self._lock, self._handed_back_failed)  # (reload_window)
        self.change_gate.on_report = self._window.poke
        self._owed = OwedRender(self._lock, self._apply_locked, self.change_gate)  # (owed.py)
        self._stopping = False
        self.info = HAProxyStatus()
        self._failures = Failures(self.info, self.metrics, self._gate, self._pending,
                                  lambda: self.settings.candidate_path)  # fmt: skip

    # --- synapse.contract.Applier -------------------------------------------------------

    async def start(self) -> None:
        """Read the config file on disk; managed mode: adopt our HAProxy if it still runs."""
        await self._installer.load()
        version = await asyncio.to_thread(binary_version, self.config)  # (managed: haproxy -vv)
        self.settings = settings_for(self.config, version)  # (what it supports: for the renderer)
        self._renderer = Renderer(self.config, self.settings)  # reads the template once
        self._installer.warn_without_validation()
        self._reader.warn_without_runtime()
        if self._managed is not None and await self._managed.adopt():
            self._watch_process()
        if self._dumper is not None:
            self._dumper.start(self._lock)
        self._panic.start()  # (its backstop: an adopted HAProxy's alerts do not reach us)
        sweep = self._lock, self._has_desired, self._apply_locked, self._master_alive
        self._reader.start_sweeping(*sweep)
        ADDRESSES.start(self._dns_changed)

    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        seen = self.change_gate.reported  # (a newer report: a slow reload hands back)
        task = asyncio.ensure_future(self._apply_change(desired, reason))
        return await self._window.hand_back(task, self.change_gate, seen)

    async def _apply_change(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        began = self._clock()
        async with self._window.turn(self._reader.change_waits) as reload:  # (sweep: after)
            self._desired = self._isolation.substitute(list(desired))
            self._applied, self._acked = True, None
            if reload is not None:  # HAProxy reloads: the servers go in beside it
                result = await self._beside(reload)
            else:
                with self._owed.change():  # (it may leave its render owed)
                    result = await self._apply_locked()
        result = dataclasses.replace(result, acked_at=self._acked)  # (the reconciler's trace)
        elapsed = self._clock() - began
        self.metrics.apply_duration.observe(elapsed)
        self.info.applied(reason, len(result.ops), result.reload.value, elapsed)
        if result.ops or result.reload is not ApplyOutcome.NONE:
            event(log, "haproxy_applied", reason=reason, ops=len(result.ops),
                  reload=result.reload.value, ms=round(elapsed * 1000, 2))  # fmt: skip
        return result

    async def update_config(self, config: HAProxyConfig) -> None:
        """Take a changed ``haproxy`` block (SIGHUP); the next apply renders with it. Where
        HAProxy lives (config file, sockets, managed or not) cannot change live: ValueError,
        and the running config stays. A broken template also raises."""
        settings = settings_for(config, self.settings.version)
        if changed := restart_needed(self.settings, settings):
            raise ValueError(f"changing {', '.join(changed)} needs a synapse restart")
        renderer = Renderer(config, settings)
        async with self._lock:
            self.config, self.settings, self._renderer = config, settings, renderer
            self._installer.configure(config, settings)
            self._gate.configure(config.restart_interval, config.restart_jitter)
        event(log, "haproxy_config_updated")

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until no reload is pending (rate limited, retried) and the file is on disk."""
        async with asyncio.timeout(timeout):
            await self._owed.pay()  # (an express change's render: now)
            await self._pending.done()
            with contextlib.suppress(OSError):
                await self._installer.flush()

    async def stop(self) -> None:
        """Cancel a pending reload and the sweep; managed mode: leave HAProxy serving for
        the next synapse, or stop it (``managed.stop_on_exit``)."""
        self._stopping = True  # (first: no revive or restart while the owed render is paid)
        if self._managed is not None:  # (a start waiting for a master holds the lock: ends)
            self._managed.asking.close()
        await self._window.cancel()  # (a reload under way: handed back, a retry's, ...)
        await self._pending.cancel()  # (a retry waiting for the lock: no new reload)
        await self._owed.close()  # the file says what HAProxy runs (the next synapse's start)
        for part in (self._supervisor, self._dumper, self._installer.ports, self._panic):
            if part is not None:
                await part.stop()
        await self._pending.cancel()
        await self._reader.stop_sweeping()
        await ADDRESSES.stop()
        await self._installer.edge.stop()
        async with self._lock:
            await self._installer.shut_down(self.config.managed)

    @property
    def managed_haproxy(self) -> ManagedHAProxy | None:
        """The HAProxy synapse runs (managed mode), for the stop's delay and forced end."""
        return self._managed

    def health(self) -> list[str]:
        """Why HAProxy does not run the desired state (``health.problems``); empty: it does."""
        alive = self._managed.alive if self._managed is not None else None
        (error, slow), settled = self._reader.socket_problem(), self._gate.settled is not None
        return problems(self.info, error, alive, settled, self._applied, slow)

    def degraded(self) -> list[str]:
        """/health's ``degraded`` of this side: the config file lags what HAProxy runs;
        services wait for their bind address."""
        file = self._installer.file
        effect = "it lags what HAProxy runs (retried; a reload or restart waits for it)"
        said = file.streak.degraded("haproxy config file", effect) if file is not None else []
        return said + self._isolation.degraded()

    async def backend_servers(self, backend: str) -> dict[str, str] | None:
        """{server: state} of ``backend`` in HAProxy now (None: no such backend)."""
        return (await self._reader.looks.servers_of([backend], probe=True))[backend]

    async def servers_of(self, backends: Sequence[str]) -> dict[str, dict[str, str] | None]:
        """``backend_servers`` of many backends, read in one batch (zone_health's look)."""
        return await self._reader.looks.servers_of(backends)  # (shared: ``looks``)

    def status(self) -> dict[str, Any]:
        """JSON-ready, for /status (``synapse.haproxy.status.HAProxyStatus``)."""
        mode = run_mode(self.config, self._managed)
        status = self.info.snapshot(mode, self.settings, self._reader, self._gate,
                                    self._installer.file, self._managed)  # fmt: skip
        status["isolated_services"] = self._isolation.status()
        # applies whose commands went before their render; the file lags (owed.WINDOW)
        status.update(express=self._express.sent, render_owed=self._owed.owed)
        status["panic"] = self._panic.status()  # (backends in panic: synapse.haproxy.panic)
        return status

    # --- one apply: read -> render -> plan -> run ops, or hand over to the gate -----------

    async def _dns_changed(self) -> None:
        """A server's DNS name has a new address: render it (`set server addr`, or a reload)."""
        if self._has_desired():
            async with self._lock:
                await self._apply_locked()

    def _has_desired(self) -> bool:
        return self._applied and not self._stopping

    def _master_alive(self) -> bool:
        return self._managed is None or self._managed.alive

    async def _apply_locked(self, desired: list[DesiredService] | None = None) -> ApplyResult:
        """Plan against HAProxy and act on ``desired`` (None: the last); a refused candidate
        isolates the services it names, the rest is applied (``isolation``). Under the lock."""
        desired = self._desired if desired is None else desired
        self._apply_began = time.monotonic()  # (a reload on no answer since: ``stalled``)
        # HAProxy never asks DNS; looked up before the isolation reads a refused service
        # back with these servers (without addresses: never seeded, left out)
        desired = await ADDRESSES.resolved(desired)
        result = await self._isolation.apply(self._apply_with, desired, self.settings)
        if self._isolation.isolated:  # the refusal stays on /status while it lasts
            # (unless every one waits for its address: a standby LB without its VIP is
            # degraded, not failing: ``Isolation.degraded``; even with every service out:
            # a standby's services all wait for the VIP, and a typo cannot be told from it)
            waiting = self._isolation.waiting_for_address()
            self.info.validation_error = None if waiting else self.info.last_validation_error
        return self._told(result)  # (on_applied: Reloading's)

    async def _apply_with(self, desired: list[DesiredService]) -> ApplyResult:
        self._desired = desired
        async with contextlib.AsyncExitStack() as stack:
            for client in self._runtime:  # one connection per socket for the whole apply
                await stack.enter_async_context(client.held())
            return await self._apply_held()

    async def _apply_held(self) -> ApplyResult:
        if self._renderer is None:
            await self.start()
        assert self._renderer is not None
        if reason := await revive_reason(self._managed, self._supervisor):  # (came_back)
            await self._revive(reason=reason)  # before any render
        trusted = self._reader.trusted  # (else this apply reads it whole)
        unread = self._reader.unread  # (wanted: of those, the ones the apply may plan)
        wanted = self._renderer.changed_backends(self._desired) if unread else ()
        running = await self._reader.read(self._reader.stale(), wanted)
        if running.runtime_slow:  # alive but stalled: a reload would not help (slow_socket.is_slow)
            return self._slow()
        recovered = self._reader.take_recovered()  # (commands of the stall may run only now)
        if new := running_settings(self.settings, self.config, self._reader.version):  # Airbnb
            self.settings, self._renderer = new, Renderer(self.config, new)  # (what it supports)
        early = await self._express.send(self._renderer, self._desired, running)  # (express)
        if early.failures and self._slow_commands:
            return self._slow()
        if early.backends and not early.failures and self._owed.allowed:
            return self._owed.defer(self._reader, self._express, early.applied)  # (owed.py)
        try:
            candidate = self._render(running)
        except self._renderer.errors as err:  # (jinja2's, with an operator template)
            return self._failures.invalid(f"cannot render the config template: {err}", (), None)
        result = self._plan(candidate, running)
        if result is None or (result.reload and (self._reader.unread or early.backends)):
            await self._reader.read()  # it plans every backend (or a bridge does): read all
            return await self._apply_held()
        bridge = self._bridge(running) if result.reload is not None else None
        ops = bridge.ops if bridge else result.ops
        applied, failures = await self._run_ops(ops)
        applied, failures = early.applied + applied, early.failures + failures
        if failures and self._slow_commands:
            return self._slow()
        if failures and (trusted or recovered):  # planned on what synapse believed, or on
            return await self._apply_held()  # what a stall left: read all, plan again, once
        routed, failed = await self._installer.edge.sync(self._desired, running)  # edge_sync
        applied, failures = applied + routed, failures + failed
        reasons = list(result.reload.reasons) if result.reload else []
        reasons += [("runtime_failed", failure) for failure in failures]
        self._check.planned(candidate.parts, reasons, all_read=not self._reader.unread)
        if not reasons:
            self._express.ready = True  # HAProxy runs the candidate: the next may go express
            self._pending.clear()
            self._gate.no_reload_needed()
            self.info.in_step()  # (no refusal or failed reload stands: /health)
            written = self._installer.write(candidate, self._layout())
            return ApplyResult(tuple(applied), ApplyOutcome.NONE, (), written)
        if bridge is not None and not failures:
            # While the reload waits or fails, the file says what runs: a restart loses nothing.
            self._installer.write(bridge.config, bridge.layout)
        outcome = await self._need_reload(Reload(tuple(reasons)), candidate)
        details = tuple(detail for _, detail in reasons)
        return ApplyResult(tuple(applied) + outcome.ops, outcome.reload, details,
                           outcome.config_written, outcome.error)  # fmt: skip

    def _slow(self) -> ApplyResult:
        """HAProxy's admin socket connected but did not answer in time: nothing is planned,
        not even a reload (its new worker would wait on the stalled one for the listeners,
        then bind its own, and the connections queued on the old ones are reset when it
        resumes). The change stays desired: the sweep applies it once HAProxy answers
        (``RunningReader.read_failed``), or reloads after ``slow_socket.SLOW_LIMIT``."""
        slow = self._reader.slow_for() or 0.0
        error = f"HAProxy's admin socket is slow ({slow:.0f} s): {self._reader.runtime_error}"
        return ApplyResult(reload=ApplyOutcome.FAILED, error=error)

    def _render(self, running: RunningState) -> DesiredConfig:
        assert self._renderer is not None
        reader = self._reader
        hints, changed = reader.id_hints(running), reader.ids_changed(running)
        candidate = self._renderer.render(self._desired, hints, changed)
        reader.rendered()
        self._owed.paid()  # (it took in every change since the last render)
        self.info.rendered(candidate.warnings)
        return candidate

    def _plan(
        self, candidate: DesiredConfig, running: RunningState, reread: set[str] | None = None
    ) -> Plan | None:
        """None: it would plan backends not read since a reload. ``reread``: right after a
        reload, the structure and only these backends (the others are planned as the
        background sweep reads them)."""
        caps = self._capabilities()
        only = self._reader.backends_to_plan(candidate, running, caps)
        only = self._express.unplanned(only, candidate.backends)  # (not those it sent)
        if reread is not None and self._reader.unread:
            only = reread
        elif self._reader.unread and (only is None or not self._reader.unread.isdisjoint(only)):
            return None
        result = self._installer.unconfirmed(plan(candidate, running, caps, only))  # loadmark
        self._reader.planned(candidate, running, result, also=self._express.owed())
        return result

    def _capabilities(self) -> Capabilities:
        version, remove = self._reader.version, self.config.remove_servers
        return Capabilities(version, bool(self._runtime), remove, self._panic.held_checks())

    def _layout(self) -> Layout:
        assert self._renderer is not None
        return Layout(tuple(self._desired), self._renderer)

    def _bridge(self, running: RunningState) -> Bridge | None:
        layout = self._installer.layout
        if layout is None or running.backends is None or not self.config.do_writes:
            return None
        ids = self._reader.id_hints(running)
        return build_bridge(layout, self._desired, running, ids, self._capabilities())

    async def _run_ops(self, ops: Sequence[Op]) -> tuple[list[str], list[str]]:
        done: list[Op] = []
        began = time.monotonic()
        applied, failures = await run_ops(self._runtime, ops, self.metrics, done)
        self._slow_commands = bool(failures) and self._reader.commands_failed(
            failures, time.monotonic() - began
        )
        if applied and not failures and self._acked is None:  # (a failed batch is re-planned)
            self._acked = time.monotonic()  # (not the injected clock: event times are real)
        self.info.last_ops.extend(applied)
        if failures:
            self._reader.invalidate()  # a command failed: what we believed may be wrong
        self._reader.ran(ops, done)  # the view follows them, or reads them back (touched)
        return applied, failures

    # --- the managed process --------------------------------------------------------------

    def _watch_process(self) -> None:
        self._ran = True
        if self._supervisor is not None and not self._stopping:
            self._supervisor.watch()

    async def _restart_after_exit(self) -> None:
        """The Supervisor's restart: from the files it ran at once, then what changed since."""
        async with self._lock:
            if self._stopping or self._managed is None or self._managed.alive:
                return
            if not self._applied:  # (startup_wait: nothing desired yet)
                await self._revive(reason=CRASHED)
                return
            self._reader.invalidate()
            await self._apply_locked()  # starts it (launch false: adopts it), then the rest

    async def _revive(self, reason: str = "the last good config: the new one is invalid") -> bool:
        """The managed HAProxy is down (crashed, or the candidate cannot be installed): run
        the file, the last config HAProxy ran: the best thing to serve until a valid one."""
        if self._stopping or not await self._installer.start_from_file():
            return False
        self._watch_process()
        self._failures.started_from_file(reason)
        # Like after a start: the structure and what may differ at once, the rest later.
        layout = self._installer.layout if self.config.do_writes and self._applied else None
        serving = self._installer.serving_pid
        bridge = await revived(self._reader, layout, self._desired, self._capabilities(), serving)
        if bridge is not None:
            await self._run_ops(bridge.ops)
            self._installer.write(bridge.config, bridge.layout)
            self._acked = None  # (the bridge's answer is not the change's)
        return True
