"""The HAProxy controller: makes HAProxy run the desired services, at runtime when it can.

Public API (what synapse-core calls)::

    controller = HAProxyController(config: HAProxyConfig, registry: CollectorRegistry)
    await controller.start()          # reads the config file on disk; managed: adopts a
                                      # running HAProxy of ours (else the first apply starts one)
    result = await controller.apply(desired: list[DesiredService], reason: str) -> ApplyResult
    await controller.update_config(new: HAProxyConfig)  # SIGHUP; ValueError if paths change
    await controller.stop()           # cancels a pending reload; managed: stops HAProxy
    controller.status() -> dict       # JSON-ready, for /status; "backends" is
                                      # {backend: {server: {state, weight, address}}}
    await controller.flush()          # waits until no reload is pending and the config
                                      # file is on disk (tests, shutdown)
    controller.reload_count, controller.start_count

``apply`` never raises because of HAProxy: failures are logged, counted and
shown in ``status()``; the returned ApplyResult says what happened
(``result.reload`` is "none", "done", "pending", "invalid", "failed" or
"disabled"). Calls are serialised; a call made while a reload waits for its
turn updates what that reload will install.

One apply costs what changed, not the size of the fleet:
1. read the running state of the backends whose services changed
   (``synapse.haproxy.view``: `show servers state <backend>`, with `show info` to
   notice another process; one connection serves the whole apply); the whole state
   at start, after a reload or a failed command; the config file is known (synapse
   keeps it equal to what HAProxy runs, and remembers what it wrote);
2. render the candidate: only changed services are rendered again (server ids HAProxy
   already uses are kept), and the candidate says where it differs from the last one;
3. plan (``synapse.haproxy.planner``) those differences, and server by server only the
   backends whose spec or running state changed since a plan last found nothing to
   do there; apply the runtime operations in one batch; a failed operation turns into
   a reload; read again the backends they changed;
4. no reload needed: set the config file's new text; it is written in the background
   (``synapse.haproxy.configfile``, atomic), so a later reload or restart starts from
   exactly this state;
5. reload needed: validate the candidate (``haproxy -c`` or the Airbnb
   ``check_command``); an invalid one never replaces the running config and is
   reported loudly. Valid: dump ``show servers state`` into the server-state
   file, swap the file atomically, reload (master CLI in managed mode, else
   ``reload_command``), confirm the new worker, then apply the runtime
   operations the reload did not carry. Reloads are at least
   ``restart_interval`` (+ a random ``restart_jitter`` fraction) apart; the ones
   asked for meanwhile coalesce into one.

Every FULL_READ_INTERVAL a background sweep reads the whole runtime state, a part at a
time, and plans the backends where HAProxy differs from what synapse believed, so
drift (an operator's command) is corrected even when nothing changes.

While a reload waits, fails or is refused, the runtime operations are planned
against a "bridge": the structure the file on disk was rendered from, filled with
today's servers. The bridge is written as the file, so the file always says what
HAProxy runs. A managed HAProxy that dies while the candidate is refused is
started again from that file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from prometheus_client import CollectorRegistry

from smartstack.logs import event
from synapse.atomic import write_atomic
from synapse.config import HAProxyConfig
from synapse.haproxy.commands import run_command, validate_config
from synapse.haproxy.configfile import ConfigFile
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.managed import HAProxyProcessError, ManagedHAProxy
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Op, Plan, Reload
from synapse.haproxy.planner import plan
from synapse.haproxy.render import Renderer
from synapse.haproxy.running import Capabilities, RunningState
from synapse.haproxy.runtime import SKIPPED, RuntimeClient
from synapse.haproxy.settings import settings_for
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.view import RunningIds, RunningView
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")

FULL_READ_INTERVAL = 30.0  # seconds between background reads of the whole runtime state
MAX_LOGGED_FAILURES = 20  # failed runtime commands logged one by one per apply
MAX_BACKOFF = 60.0  # seconds between attempts after repeated reload failures
RECENT_OPS = 50  # runtime commands kept for /status
START_TIMEOUT = 15.0
STABLE_RUN = 30.0  # seconds a restarted HAProxy must live before its crashes are forgiven


@dataclass(frozen=True)
class ApplyResult:
    """What one apply() did."""

    ops: tuple[str, ...] = ()  # runtime API commands applied
    reload: str = "none"  # none | done | pending | invalid | failed | disabled
    reasons: tuple[str, ...] = ()  # why a reload was needed
    config_written: bool = False
    error: str | None = None

    @property
    def reloaded(self) -> bool:
        return self.reload == "done"


class _ReloadFailed(Exception):
    pass


@dataclass(frozen=True)
class _Layout:
    """What the config file on disk was rendered from: re-rendering it with other servers
    gives a config HAProxy can reach at runtime (the "bridge" while a reload waits)."""

    services: tuple[DesiredService, ...]
    renderer: Renderer


_Bridge = tuple[DesiredConfig, tuple[Op, ...], _Layout]  # the config, its runtime ops, its layout


class HAProxyController:
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
        self.metrics = HAProxyMetrics(registry)
        self._clock = clock
        self._rng = rng
        self._renderer: Renderer | None = None
        self._runtime = [RuntimeClient(path) for path in self.settings.runtime_sockets]
        self._managed = (
            ManagedHAProxy(self.settings, START_TIMEOUT, config.reload_timeout)
            if self.settings.managed
            else None
        )
        self._lock = asyncio.Lock()
        self._desired: list[DesiredService] = []
        self._applied = False  # apply() was called: _desired is real
        path = self.settings.config_path
        self._file = ConfigFile(path) if path is not None and config.do_writes else None
        self._file_layout: _Layout | None = None  # None: the file predates this process
        self._file_loaded = False
        self._version: tuple[int, int, int] | None = None
        self._next_reload_at = 0.0
        self._failures = 0
        self._failed_candidate: str | None = None
        self._settled_candidate: str | None = None
        self._pending: Reload | None = None
        self._pending_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._resync: asyncio.Task[None] | None = None
        self._stopping = False
        self._warned: set[str] = set()
        # status
        self.reload_count = 0
        self.start_count = 0
        self._last_reload: dict[str, Any] | None = None
        self._validation_error: dict[str, Any] | None = None
        self._last_validation_error: dict[str, Any] | None = None
        self._last_reload_error: dict[str, Any] | None = None
        self._last_apply: dict[str, Any] | None = None
        self._recent_ops: deque[str] = deque(maxlen=RECENT_OPS)
        self._runtime_error: str | None = None
        self._view = (
            RunningView(self._runtime[0], FULL_READ_INTERVAL, clock) if self._runtime else None
        )
        self._ids = RunningIds()
        # Backends whose running servers changed since the main renderer last rendered.
        self._ids_changed: set[str] = set()
        # Backends to plan server by server: those whose running servers changed, or that
        # had something to do, since the last plan (``_plan_base``); None: all of them.
        # A backend outside it has the same spec and servers a plan found nothing for.
        self._to_plan: set[str] | None = None
        self._plan_base: ParsedConfig | None = None
        self._plan_caps: Capabilities | None = None
        self._warnings: tuple[str, ...] = ()

    # --- public API ---------------------------------------------------------------------

    async def start(self) -> None:
        """Read the config file on disk; managed mode: adopt our HAProxy if it still runs."""
        await self._load_file()
        self._renderer = Renderer(self.config, self.settings)  # reads the template once
        if not self.settings.can_validate and self.config.do_writes:
            detail = "no check_command and no haproxy binary: configs are not validated"
            event(log, "haproxy_validation_unavailable", level=logging.WARNING,
                  binary=self.settings.binary, detail=detail)  # fmt: skip
        if not self._runtime:
            event(log, "haproxy_no_runtime_api", level=logging.WARNING,
                  detail="no runtime socket (do_socket false, or no socket_file_path / stats "
                  "socket): every change of servers needs a reload")  # fmt: skip
        if self._managed is not None and await self._managed.adopt():
            self._supervise()
        if self._view is not None and self._resync is None:
            self._resync = asyncio.create_task(self._resync_loop())

    async def apply(self, desired: list[DesiredService], reason: str) -> ApplyResult:
        began = self._clock()
        async with self._lock:
            self._desired = list(desired)
            self._applied = True
            result = await self._reconcile()
        elapsed = self._clock() - began
        self.metrics.apply_duration.observe(elapsed)
        self._last_apply = {
            "at": time.time(),
            "reason": reason,
            "ops": len(result.ops),
            "reload": result.reload,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if result.ops or result.reload != "none":
            event(log, "haproxy_applied", reason=reason, ops=len(result.ops),
                  reload=result.reload, ms=round(elapsed * 1000, 2))  # fmt: skip
        return result

    async def update_config(self, config: HAProxyConfig) -> None:
        """Take a changed ``haproxy`` block (SIGHUP); the next apply renders with it.

        Where HAProxy lives (config file, sockets, managed or not) cannot change live:
        ValueError, and the running config stays. A broken template also raises.
        """
        settings = settings_for(config)
        fixed = ("config_path", "runtime_sockets", "managed", "master_socket", "binary", "pid_file")
        changed = [key for key in fixed if getattr(settings, key) != getattr(self.settings, key)]
        if changed:
            raise ValueError(f"changing {', '.join(changed)} needs a synapse restart")
        renderer = Renderer(config, settings)
        async with self._lock:
            self.config, self.settings, self._renderer = config, settings, renderer
            self._failed_candidate = self._settled_candidate = None
        event(log, "haproxy_config_updated")

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until no reload is pending (rate limited or being retried) and the config
        file is on disk."""
        async with asyncio.timeout(timeout):
            while True:
                if self._pending_task is not None:
                    await asyncio.wait({self._pending_task})
                    continue
                async with self._lock:  # a reload under way holds the lock
                    if self._pending_task is None:
                        break
            if self._file is not None:
                with contextlib.suppress(OSError):
                    await self._file.flush()

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._pending_task, self._supervisor, self._resync):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pending_task = self._supervisor = self._resync = None
        async with self._lock:
            if self._file is not None:
                await self._file.close()  # what HAProxy ran last is on disk
            if self._managed is not None:
                await self._managed.stop()

    def status(self) -> dict[str, Any]:
        pending = None
        if self._pending is not None:
            pending = {
                "reason": self._pending.summary,
                "due_in_s": round(max(0.0, self._next_reload_at - self._clock()), 3),
            }
        status: dict[str, Any] = {
            "mode": self._mode,
            "config_file": str(self.settings.config_path) if self.settings.config_path else None,
            "haproxy_version": ".".join(map(str, self._version)) if self._version else None,
            "reloads": self.reload_count,
            "starts": self.start_count,
            "last_reload": self._last_reload,
            "pending_reload": pending,
            "validation_error": self._validation_error,
            "last_validation_error": self._last_validation_error,
            "last_reload_error": self._last_reload_error,
            "last_apply": self._last_apply,
            "last_ops": list(self._recent_ops),
            "runtime_error": self._runtime_error,
            "config_write_error": self._file.error if self._file is not None else None,
            "render_warnings": list(self._warnings),
            "backends": {
                backend: {
                    name: {"state": s.label, "weight": s.weight, "address": f"{s.addr}:{s.port}"}
                    for name, s in sorted(servers.items())
                }
                for backend, servers in sorted(self._view.backends.items() if self._view else ())
            },
        }
        if self._managed is not None:
            status["haproxy_pids"] = {
                "master": self._managed.master_pid,
                "worker": self._managed.worker_pid,
            }
        return status

    # --- one reconciliation ---------------------------------------------------------------

    @property
    def _mode(self) -> str:
        if self._managed is not None:
            return "managed"
        if self.config.do_reloads and self.config.do_writes:
            return "reload_command"
        return "no_reloads"

    async def _reconcile(self) -> ApplyResult:
        """Plan against HAProxy and act. The caller holds the lock."""
        async with contextlib.AsyncExitStack() as stack:
            for client in self._runtime:  # one connection per socket for the whole apply
                await stack.enter_async_context(client.held())
            return await self._reconcile_held()

    async def _reconcile_held(self) -> ApplyResult:
        if self._renderer is None:
            await self.start()
        assert self._renderer is not None
        running = await self._read_running(self._renderer.changed_backends(self._desired))
        try:
            candidate = self._render(running)
        except (jinja2.TemplateError, OSError) as err:
            return self._invalid(f"cannot render the config template: {err}", (), None)
        only = self._backends_to_plan(candidate, running)
        result = plan(candidate, running, self._capabilities(), only)
        self._planned(candidate, running, result)
        bridge = self._bridge(running) if result.reload is not None else None
        ops = bridge[1] if bridge else result.ops
        applied, failures = await self._run_ops(ops)
        reasons = list(result.reload.reasons) if result.reload else []
        reasons += [("runtime_failed", failure) for failure in failures]
        await self._refresh_view({op.backend for op in ops})
        if not reasons:
            self._clear_pending()
            self._failed_candidate = None
            self._validation_error = None
            written = await self._write_file(candidate, self._layout())
            return ApplyResult(tuple(applied), "none", (), written)
        if bridge is not None and not failures:
            # The reload may wait (rate limit), fail or be refused: meanwhile the file says
            # what HAProxy runs now, so a restart or an outside reload loses nothing.
            await self._write_file(bridge[0], bridge[2])
        outcome = await self._need_reload(Reload(tuple(reasons)), candidate)
        return ApplyResult(
            tuple(applied) + outcome.ops,
            outcome.reload,
            tuple(detail for _, detail in reasons),
            outcome.config_written,
            outcome.error,
        )

    def _layout(self) -> _Layout:
        assert self._renderer is not None
        return _Layout(tuple(self._desired), self._renderer)

    def _bridge(self, running: RunningState) -> _Bridge | None:
        """The file's structure with today's servers, when the runtime API alone gets there.

        Services keep the config blocks the running file was rendered from; a service that
        is gone from the desired state keeps its old servers, a new one waits for the
        reload. None when there is no such config (no runtime API, no known layout, or a
        change only a reload can make, such as a server HAProxy cannot add).
        """
        layout = self._file_layout
        if layout is None or running.backends is None or not self.config.do_writes:
            return None
        wanted = {service.name: service for service in self._desired}
        services = []
        for old in layout.services:
            new = wanted.get(old.name)
            if new is not None and new.backend_name == old.backend_name:
                # Same config block: the service as wanted (its rendering is cached).
                same = new.config is old.config or new.config == old.config
                old = new if same else DesiredService(old.name, old.config, list(new.servers))
            services.append(old)
        try:
            bridge = layout.renderer.render(services, self._id_hints(running))
        except (jinja2.TemplateError, OSError):
            return None
        result = plan(bridge, running, self._capabilities())
        if result.reload is not None:
            return None
        return bridge, result.ops, _Layout(tuple(services), layout.renderer)

    def _render(self, running: RunningState) -> DesiredConfig:
        assert self._renderer is not None
        changed = self._ids_changed if running.backends is not None else None
        candidate = self._renderer.render(self._desired, self._id_hints(running), changed)
        self._ids_changed = set()
        if candidate.warnings != self._warnings:
            for warning in candidate.warnings:
                event(log, "haproxy_render_warning", level=logging.WARNING, detail=warning)
        self._warnings = candidate.warnings
        return candidate

    def _capabilities(self) -> Capabilities:
        return Capabilities(
            version=self._version,
            runtime_api=bool(self._runtime),
            remove_servers=self.config.remove_servers,
        )

    async def _read_running(self, changed: Collection[str] | None = None) -> RunningState:
        """The config file as synapse wrote it, and HAProxy's runtime state.

        The runtime view is read whole when it is not trusted, else only the ``changed``
        backends (None: whole).
        """
        config: ParsedConfig | None = None
        missing = False
        if self._file is not None:
            missing = not self._file.exists
            config = self._file.parsed
        if self._view is None:
            return RunningState(None, config, missing)
        try:
            if self._version is None:
                self._version = await self._runtime[0].version()
            if changed is None:
                await self._view.read_all()
            else:
                await self._view.read(changed)
        except HAProxySocketError as err:
            self._view.invalidate()
            self._runtime_error = str(err)
            return RunningState(None, config, missing, runtime_error=str(err))
        finally:
            self._note_view_changes()
        self._runtime_error = None
        return RunningState(self._view.snapshot(), config, missing)

    async def _refresh_view(self, touched: Collection[str]) -> None:
        """After runtime commands: read again the backends they changed."""
        if self._view is None or not touched:
            return
        try:
            await self._view.refresh(touched)
        except HAProxySocketError as err:
            self._view.invalidate()
            event(log, "haproxy_state_read_failed", level=logging.WARNING, error=str(err))
        finally:
            self._note_view_changes()

    async def _resync_loop(self) -> None:
        """Every FULL_READ_INTERVAL: read HAProxy's whole runtime state, a part at a time
        and without holding up applies (``synapse.haproxy.view``), then plan the backends
        that differ from what synapse believed (an operator's command, health changes):
        drift is corrected even when nothing else changes."""
        view = self._view
        assert view is not None
        while not self._stopping:
            await asyncio.sleep(max(view.due, 1.0))
            if not view.valid or view.due or not self._applied:
                continue  # not read yet, or an apply read it all meanwhile
            try:
                if not await view.sweep(self._lock):
                    continue
            except HAProxySocketError:
                continue  # the next apply will find out
            async with self._lock:
                view.swept()
                self._note_view_changes()
                if self._to_plan is None or self._to_plan:
                    await self._reconcile()

    def _note_view_changes(self) -> None:
        assert self._view is not None
        replaced = self._view.take_replaced()
        self._ids_changed |= replaced
        if self._to_plan is not None:
            self._to_plan |= replaced

    def _backends_to_plan(self, desired: DesiredConfig, running: RunningState) -> set[str] | None:
        """The backends worth planning server by server (None: all of them)."""
        caps = self._capabilities()
        if caps != self._plan_caps:
            self._plan_caps, self._to_plan = caps, None
        delta = desired.delta
        if running.backends is None or self._to_plan is None or delta is None:
            return None
        if delta.base is not self._plan_base:
            return None
        return self._to_plan | delta.backends

    def _planned(self, desired: DesiredConfig, running: RunningState, result: Plan) -> None:
        """After a plan: only the backends it found something to do for stay to plan."""
        if running.backends is None:
            self._to_plan, self._plan_base = None, None
            return
        self._to_plan = set(result.active)
        self._plan_base = desired.parsed

    def _id_hints(self, running: RunningState) -> Mapping[str, Mapping[str, int]]:
        """Server ids HAProxy uses (runtime API), else the ones in the config file."""
        if running.backends is not None:
            return self._ids.use(running.backends)
        hints: dict[str, dict[str, int]] = {}
        if running.config is not None:
            for proxy, lines in running.config.servers.items():
                for name, line in lines.items():
                    tokens = line.options.split()
                    if "id" in tokens[:-1] and tokens[tokens.index("id") + 1].isdigit():
                        hints.setdefault(proxy, {})[name] = int(tokens[tokens.index("id") + 1])
        return hints

    async def _run_ops(self, ops: tuple[Op, ...]) -> tuple[list[str], list[str]]:
        """Apply ops on every runtime socket, in one batch each; (commands applied,
        failures needing a reload). A server whose op failed gets none of its later ops."""
        errors: list[str | None] = [None] * len(ops)
        for client in self._runtime:
            todo = [i for i, error in enumerate(errors) if error is None]
            if not todo:
                break
            try:
                results = await client.run_ops([ops[i] for i in todo])
            except HAProxySocketError as err:
                results = [str(err)] * len(todo)
            for i, result in zip(todo, results, strict=True):
                errors[i] = result
        applied: list[str] = []
        failures: list[str] = []
        logged = 0
        for op, error in zip(ops, errors, strict=True):
            if error is None:
                applied.append(op.command)
                self._recent_ops.append(op.command)
                self.metrics.plan_operations.labels(op.label).inc()
                continue
            if error == SKIPPED:
                continue
            self.metrics.runtime_errors.labels(op.label).inc()
            if not op.tolerated:
                failures.append(f"runtime command failed: {error}")
            logged += 1
            if logged <= MAX_LOGGED_FAILURES:
                fallback = "retry later" if op.tolerated else "reload"
                level = logging.INFO if op.tolerated else logging.WARNING
                event(log, "haproxy_runtime_command_failed", level=level, command=op.command,
                      error=error, fallback=fallback)  # fmt: skip
        if logged > MAX_LOGGED_FAILURES:
            more = logged - MAX_LOGGED_FAILURES
            event(log, "haproxy_runtime_command_failed", level=logging.WARNING, more=more,
                  detail="further failed commands are not logged one by one")  # fmt: skip
        if failures and self._view is not None:
            self._view.invalidate()  # a command failed: what we believed may be wrong
        if applied:
            event(log, "haproxy_runtime_ops", count=len(applied), first=applied[0])
        return applied, failures

    # --- reloads --------------------------------------------------------------------------

    async def _need_reload(self, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        if not self.config.do_writes:
            self._warn_once("no_writes", "HAProxy needs a reload but do_writes is false",
                            reload.summary)  # fmt: skip
            return ApplyResult(reload="disabled")
        if candidate.text == self._failed_candidate:
            await self._revive()
            return ApplyResult(reload="invalid", error=self._failed_message())
        down = self._managed is not None and not self._managed.alive
        if candidate.text == self._settled_candidate and not down:
            error = "HAProxy still differs from this config after reloading it"
            return ApplyResult(reload="failed", error=error)
        if down and not self._failures:
            return await self._reload(reload, candidate)  # a first start is not rate limited
        if self._clock() >= self._next_reload_at:
            return await self._reload(reload, candidate)
        self._pending = reload
        self.metrics.reload_pending.set(1)
        if self._pending_task is None:
            self._pending_task = asyncio.create_task(self._reload_later())
            event(log, "haproxy_reload_scheduled", reason=reload.summary,
                  in_s=round(self._next_reload_at - self._clock(), 3))  # fmt: skip
        return ApplyResult(reload="pending")

    async def _reload_later(self) -> None:
        try:
            while True:
                delay = self._next_reload_at - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)
                async with self._lock:
                    if self._clock() < self._next_reload_at:
                        continue  # another reload went first: wait for the new slot
                    self._pending_task = None
                    self._pending = None
                    self.metrics.reload_pending.set(0)
                    await self._reconcile()
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not kill the pending reload silently
            log.exception("pending HAProxy reload failed")
            self._pending_task = None

    def _clear_pending(self) -> None:
        if self._pending_task is not None and self._pending_task is not asyncio.current_task():
            self._pending_task.cancel()
        self._pending_task = None
        self._pending = None
        self.metrics.reload_pending.set(0)

    def _retry_later(self, reload: Reload) -> None:
        self._pending = reload
        self.metrics.reload_pending.set(1)
        if self._pending_task is None:
            self._pending_task = asyncio.create_task(self._reload_later())

    async def _reload(self, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        began = self._clock()
        if not self.config.do_reloads and self._managed is None:
            return await self._write_without_reload(reload, candidate)
        error = await self._validate(candidate)
        if error is not None:
            result = self._invalid(error, reload.reasons, candidate.text)
            await self._revive()
            return result
        self._validation_error = self._failed_candidate = None
        interval = self.config.restart_interval
        self._next_reload_at = began + interval * (1 + self.config.restart_jitter * self._rng())
        await self._dump_server_state()
        assert self._file is not None  # reloads need a config file
        previous = self._file.text, self._file.parsed, self._file_layout
        wrote = await self._write_file(candidate, self._layout())
        starting = self._managed is not None and not self._managed.alive
        try:
            await self._swap_in()
        except _ReloadFailed as err:
            if previous[0] is not None:
                # The old config is still what HAProxy runs.
                await self._restore_file(*previous)
            return self._reload_failed(str(err), reload, began)
        self._clear_pending()  # whatever waited is in this reload
        for client in self._runtime:
            await client.release()  # held connections reach the old process
        if self._view is not None:
            self._view.invalidate()  # a new process: read all of it
        self._failures = 0
        self._last_reload_error = None
        self._version = None  # re-read: the binary may have been upgraded
        kind = "start" if starting else reload.kind
        if starting:
            self.start_count += 1
        else:
            self.reload_count += 1
        self.metrics.reloads.labels(kind).inc()
        self.metrics.last_reload.set(time.time())
        elapsed = self._clock() - began
        self._last_reload = {
            "at": time.time(),
            "kind": kind,
            "reason": reload.summary,
            "duration_ms": round(elapsed * 1000, 1),
        }
        event(log, "haproxy_started" if starting else "haproxy_reloaded", kind=kind,
              reason=reload.summary, ms=round(elapsed * 1000, 1))  # fmt: skip
        return await self._after_reload(candidate, wrote)

    async def _after_reload(self, candidate: DesiredConfig, wrote: bool) -> ApplyResult:
        """Runtime ops the reload did not carry (states restored from the state file...)."""
        running = await self._read_running()
        fresh = self._render(running)
        after = plan(fresh, running, self._capabilities(), self._backends_to_plan(fresh, running))
        self._planned(fresh, running, after)
        applied, failures = await self._run_ops(after.ops)
        written = await self._write_file(fresh, self._layout()) or wrote
        await self._refresh_view({op.backend for op in after.ops})
        if after.reload is not None and after.reload.kind == "runtime_unavailable":
            # Reloaded, but nothing answers on the runtime socket: try again, backing off.
            failed = self._reload_failed(after.reload.summary, after.reload, self._clock())
            return ApplyResult(tuple(applied), "done", (), written, failed.error)
        if after.reload is not None or failures:
            # Reloaded with exactly this config and HAProxy still differs: retrying the
            # same candidate would loop, so it waits for the next change.
            self._settled_candidate = candidate.text
            detail = after.reload.summary if after.reload else "; ".join(failures)
            event(log, "haproxy_differs_after_reload", level=logging.ERROR, detail=detail)
            return ApplyResult(tuple(applied), "done", (), written, f"still differs: {detail}")
        self._settled_candidate = None
        return ApplyResult(tuple(applied), "done", (), written)

    async def _swap_in(self) -> None:
        """Make HAProxy load the config file: start, master reload, or reload_command."""
        if self._file is not None:
            try:
                await self._file.flush()  # HAProxy reads the file: it must be on disk
            except OSError as err:
                raise _ReloadFailed(str(err)) from err
        if self._managed is not None:
            try:
                if self._managed.alive:
                    await self._managed.reload()
                else:
                    await self._managed.start()
                    self._supervise()
            except (HAProxyProcessError, HAProxySocketError) as err:
                raise _ReloadFailed(str(err)) from err
            return
        before = await self._worker_pid()
        assert self.config.reload_command is not None
        result = await run_command(self.config.reload_command, self.config.reload_timeout)
        if not result.ok:
            raise _ReloadFailed(
                f"reload_command exited with {result.returncode}: {result.output[-1000:]}"
            )
        await self._confirm_new_worker(before)

    async def _worker_pid(self) -> str | None:
        if not self._runtime:
            return None
        try:
            return (await self._runtime[0].info()).get("Pid")
        except HAProxySocketError:
            return None

    async def _confirm_new_worker(self, before: str | None) -> None:
        """After reload_command: wait until a new process answers on the admin socket."""
        if not self._runtime:
            return
        deadline = self._clock() + self.config.reload_timeout
        while self._clock() < deadline:
            pid = await self._worker_pid()
            if pid is not None and pid != before:
                return
            await asyncio.sleep(0.02)
        event(log, "haproxy_reload_unconfirmed", level=logging.WARNING,
              detail=f"no new HAProxy process answered on {self._runtime[0].path} within "
              f"{self.config.reload_timeout}s")  # fmt: skip

    async def _write_without_reload(self, reload: Reload, candidate: DesiredConfig) -> ApplyResult:
        """do_reloads: false (Airbnb): install the valid config, leave reloading to others."""
        error = await self._validate(candidate)
        if error is not None:
            return self._invalid(error, reload.reasons, candidate.text)
        self._warn_once("no_reloads", "HAProxy needs a reload but do_reloads is false",
                        reload.summary)  # fmt: skip
        written = await self._write_file(candidate, self._layout())
        if self._file is not None:
            await self._file.flush()  # others reload it: on disk before apply returns
        return ApplyResult((), "disabled", (), written)

    async def _validate(self, candidate: DesiredConfig) -> str | None:
        if not self.settings.can_validate:
            return None
        return await validate_config(self.settings, candidate.text, self.config.reload_timeout)

    def _invalid(
        self, error: str, reasons: tuple[tuple[str, str], ...], candidate: str | None
    ) -> ApplyResult:
        self.metrics.validation_failures.inc()
        path = str(self.settings.candidate_path) if self.settings.candidate_path else None
        self._validation_error = {"at": time.time(), "message": error, "candidate": path,
                                  "reasons": [d for _, d in reasons][:10]}  # fmt: skip
        self._last_validation_error = self._validation_error
        event(log, "haproxy_config_invalid", level=logging.ERROR, candidate=path, error=error,
              detail="the running config stays in place")  # fmt: skip
        self._failed_candidate = candidate  # not retried until the desired state changes
        return ApplyResult(reload="invalid", error=error)

    def _failed_message(self) -> str | None:
        return self._validation_error["message"] if self._validation_error else None

    def _reload_failed(self, error: str, reload: Reload, began: float) -> ApplyResult:
        self._failures += 1
        self.metrics.reload_failures.inc()
        base = max(self.config.restart_interval, 1.0)
        backoff = min(MAX_BACKOFF, base * 2 ** (self._failures - 1))
        self._next_reload_at = began + backoff
        self._last_reload_error = {"at": time.time(), "message": error, "reason": reload.summary,
                                   "retry_in_s": round(backoff, 1)}  # fmt: skip
        event(log, "haproxy_reload_failed", level=logging.ERROR, error=error,
              reason=reload.summary, retry_in_s=round(backoff, 1))  # fmt: skip
        self._retry_later(reload)
        return ApplyResult(reload="failed", error=error)

    async def _dump_server_state(self) -> None:
        """Save runtime states for `load-server-state-from-file` in the new worker."""
        path = self.settings.state_file
        if path is None:
            return
        try:
            if self._runtime and self._runtime_error is None:
                text = await self._runtime[0].dump_servers_state()
                await asyncio.to_thread(write_atomic, path, text)
            elif not await asyncio.to_thread(path.exists):
                # An empty dump: HAProxy warns about a missing state file at every start.
                await asyncio.to_thread(write_atomic, path, "1\n")
        except (HAProxySocketError, OSError) as err:
            event(log, "haproxy_state_dump_failed", level=logging.WARNING, error=str(err))

    # --- the managed process --------------------------------------------------------------

    def _supervise(self) -> None:
        if self._managed is None or self._stopping:
            return
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._watch_process())

    async def _revive(self) -> None:
        """The managed HAProxy is down and the candidate cannot be installed: run the file.

        The file on disk is the last config HAProxy ran (plus what runtime operations
        changed since), so it is the best thing to serve until a valid candidate comes.
        """
        if self._managed is None or self._managed.alive or self._stopping:
            return
        if self._file is None or not self._file.exists:
            return
        with contextlib.suppress(OSError):  # else the disk has an older good config: still good
            await self._file.flush()
        try:
            await self._managed.start()
        except HAProxyProcessError as err:
            event(log, "haproxy_start_failed", level=logging.ERROR, error=str(err)[:2000])
            return
        self._supervise()
        self.start_count += 1
        self.metrics.reloads.labels("start").inc()
        event(log, "haproxy_started", kind="start", level=logging.WARNING,
              reason="the last good config: the new one is invalid")  # fmt: skip
        # Like after a reload: states the state file brought back may be out of date.
        if self._view is not None:
            self._view.invalidate()
        running = await self._read_running()
        bridge = self._bridge(running)
        if bridge is not None:
            await self._run_ops(bridge[1])
            await self._write_file(bridge[0], bridge[2])
            await self._refresh_view({op.backend for op in bridge[1]})

    async def _watch_process(self) -> None:
        """Restart the managed HAProxy if it dies (backing off when it keeps dying)."""
        assert self._managed is not None
        failures = 0
        while not self._stopping:
            began = self._clock()
            status = await self._managed.wait_exit()
            if self._stopping:
                return
            # A long healthy run forgives earlier crashes; a crash loop backs off.
            failures = 1 if self._clock() - began > STABLE_RUN else failures + 1
            delay = min(MAX_BACKOFF, max(self.config.restart_interval, 0.5) * 2 ** (failures - 1))
            event(log, "haproxy_exited", level=logging.ERROR, status=status,
                  restart_in_s=round(delay, 1), output=self._managed.output_tail(5))  # fmt: skip
            await asyncio.sleep(delay)
            async with self._lock:
                if self._stopping or self._managed.alive or not self._applied:
                    continue
                if self._view is not None:
                    self._view.invalidate()
                await self._reconcile()  # not alive: the reconcile starts it

    # --- files ----------------------------------------------------------------------------

    async def _load_file(self) -> None:
        if self._file is not None and not self._file_loaded:
            await self._file.load()
            self._file_loaded = True

    async def _write_file(self, config: DesiredConfig, layout: _Layout | None) -> bool:
        """Make ``config`` the config file's text (written in the background, see
        ``synapse.haproxy.configfile``); ``layout`` made it. True when the text changed."""
        if self._file is None:
            return False
        self._file_layout = layout
        if not self._file.set(config.parts, config.parsed):
            return False
        self.metrics.config_writes.inc()
        return True

    async def _restore_file(
        self, text: str, parsed: ParsedConfig | None, layout: _Layout | None
    ) -> None:
        assert self._file is not None
        self._file.set((text,), parsed)
        self._file_layout = layout
        with contextlib.suppress(OSError):  # the writer keeps trying, and says so
            await self._file.flush()

    def _warn_once(self, key: str, message: str, detail: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            event(log, "haproxy_reload_skipped", level=logging.WARNING, why=message, detail=detail)
