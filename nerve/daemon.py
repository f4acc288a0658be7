"""The nerve daemon: services, admin API, signals, reloads and an orderly shutdown.

One asyncio loop. Each service runs on its own task; registry sessions are shared
(``Registries``). Signals:
- SIGTERM / SIGINT: stop the checks, withdraw every registration in parallel, close the
  sessions, exit 0; every step has a deadline, so this takes < 5 s even when the
  registry is unreachable (its session or lease then expires on its own).
- SIGUSR2 (restart stop): as SIGTERM, but healthy registrations stay for the next nerve.
- SIGHUP: re-read the config file (what changed: nerve/reload_plan.py). Unchanged
  services are not touched (same znode); services whose checks changed, or that were
  renamed, keep their registration; services whose record or registry changed
  re-register, the new registration written before the old one goes (nerve/handover.py)
  unless their checks moved with the address; removed services withdraw. An invalid file
  is rejected with a log line and the running config stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nerve.admin import add_maintenance_routes
from nerve.assemble import build_service
from nerve.config import NerveConfig, ServiceConfig, load_nerve_config
from nerve.docker_source import DockerSource, docker_mode_config
from nerve.handover import pass_on
from nerve.last_good import config_health, config_state
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registration_identity import retake_for_reload
from nerve.registries import Registries, reporter_identity
from nerve.reload_plan import ReloadPlan, placement, plan_changes, plan_reload
from nerve.reload_steps import ReloadSteps, Retiring
from nerve.reporters.base import Reporter
from nerve.restart_stop import left_by, log_left, withdraws
from nerve.service import Service
from nerve.silence import SILENCE
from nerve.state_dir import DEFAULT_STATE_DIR, resolve_state_dir  # noqa: F401 (theirs)
from smartstack.admin import AdminServer, start_or_log
from smartstack.admin_token import TokenFileError
from smartstack.configfile import ConfigError
from smartstack.identity_lock import ReloadClash, held, release
from smartstack.logs import event
from smartstack.reload_settle import Stamp, file_stamps, hold_fresh_write
from smartstack.spawn_limits import ChildNotStarted, RetryNotChecked
from smartstack.statsd import make_stats

if TYPE_CHECKING:
    from nerve.config_load import ConfigSource
    from smartstack.admin import Health

log = logging.getLogger("nerve")

WITHDRAW_TIMEOUT = 2.5  # seconds for the parallel withdraw at shutdown
CLOSE_TIMEOUT = 1.0  # then closing sessions (revoking leases)
HEARTBEAT_INTERVAL = 1.0


class NerveDaemon(ReloadSteps):
    def __init__(
        self,
        config: NerveConfig,
        config_path: str | os.PathLike[str] | None = None,
        instance_id_override: str | None = None,
        metrics: NerveMetrics | None = None,
    ) -> None:
        self.config = config
        self.config_path = Path(config_path) if config_path is not None else None
        self.instance_id_override = instance_id_override
        self.strict = False  # --strict: unknown keys refuse a reloaded file too
        # nerve -c: the file validated by a child, plain objects here (nerve.config_load);
        # None: validated in-process (tests, an embedding program).
        self.source: ConfigSource | None = None
        self.metrics = metrics or NerveMetrics()
        self.metrics.statsd = make_stats(config.statsd)
        self.store = MaintenanceStore(resolve_state_dir(config, self.config_path))
        self.services: dict[str, Service] = {}
        self.service_configs: dict[str, ServiceConfig] = {}
        # name -> reporter_identity(its config), computed once: comparing every new service
        # with every running one re-encoded each config (500 services: 1.9 s of a 3 s start).
        self._identities: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.admin: AdminServer | None = None
        self.started_at = time.time()
        self._registries: Registries | None = None
        self._retiring: set[Reporter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        # a reload whose child could not start, again (``reload``: main.py's SIGHUP fold)
        not_checked = self.metrics.reloads.labels("not_checked")
        self.reload_retry = RetryNotChecked(log, lambda: None, lambda _: not_checked.inc())
        self._stopping = False
        # A stop has begun: no reload plan is applied from now on (close_reloads).
        self._reloads_closed = False
        self._applying = 0  # changes of the reload plan being applied (0: none)
        # The config's files as of the last successful read (smartstack.reload_settle: a
        # reload of a file written in place a moment ago waits for it to be still).
        self._read_stamps: dict[Path, Stamp] = (
            file_stamps(self.config_path, [config.service_conf_dir]) if self.config_path else {}
        )
        self._holding = False  # a reload waits for its files to be still
        self._finish_held = False  # a restart stop came during that wait: it applies first
        self.docker: DockerSource | None = None  # docker mode (nerve/docker_source.py)

    @property
    def registries(self) -> Registries:
        assert self._registries is not None, "start() first"
        return self._registries

    # --- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._registries = Registries(asyncio.get_running_loop(), self.metrics)
        for name, cfg in self.config.services.items():
            service = self._build(name, cfg)
            if service is not None:
                service.start()
        docker_cfg = docker_mode_config(self.config)
        if docker_cfg is not None:  # containers become services from their labels
            self.docker = DockerSource(docker_cfg, instance_id=self.config.instance_id,
                                       registries=self.registries,
                                       metrics=self.metrics, store=self.store)  # fmt: skip
            self.docker.start()
        await self._start_admin()
        self._spawn(self._heartbeat_forever(), "heartbeat")
        self._spawn(SILENCE.run(), "silence")  # a freeze of nerve, seen (nerve/silence.py)
        event(
            log,
            "nerve_started",
            instance_id=self.config.instance_id,
            services=len(self.services),
            state_dir=str(self.store.directory) if self.store.directory else None,
        )

    def _build(
        self,
        name: str,
        cfg: ServiceConfig,
        reporter: Reporter | None = None,
        initially_up: bool = False,
    ) -> Service | None:
        identity = reporter_identity(cfg)
        twin = next((n for n, i in self._identities.items() if n != name and i == identity), None)
        if twin is not None:
            # Both would write one record to one place and adopt each other's node.
            error = f"registers the same record at the same place as service {twin!r}"
            event(log, "service_not_started", level=logging.ERROR, service=name, error=error)
            return None
        try:
            service = build_service(
                name,
                cfg,
                instance_id=self.config.instance_id,
                registries=self.registries,
                metrics=self.metrics,
                store=self.store,
                reporter=reporter,
                initially_up=initially_up,
            )
        except Exception as exc:  # one bad service must not keep the others down
            event(log, "service_not_started", level=logging.ERROR, service=name, error=str(exc))
            return None
        self.services[name] = service
        self.service_configs[name] = cfg
        self._identities[name] = identity
        return service

    async def _start_admin(self) -> None:
        admin_cfg = self.config.admin
        if admin_cfg.port is None:
            return
        try:
            token = admin_cfg.token()
        except TokenFileError as exc:
            # An unreadable token leaves the admin API off, never open without one.
            event(log, "admin_not_started", level=logging.ERROR, host=admin_cfg.host,
                  port=admin_cfg.port, error=str(exc))  # fmt: skip
            return
        admin = AdminServer(admin_cfg.host, admin_cfg.port, self.metrics.registry,
                            self.status, self.healthy, token)  # fmt: skip
        add_maintenance_routes(admin, self.all_services)
        if not await start_or_log(admin):
            return
        self.admin = admin

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _heartbeat_forever(self) -> None:
        path = Path(self.config.heartbeat_path) if self.config.heartbeat_path else None
        failing = False
        while True:
            self.metrics.heartbeat.set(time.time())
            if path is not None:
                try:
                    path.touch()
                    failing = False
                except OSError as exc:
                    if not failing:  # once per failure streak, not once per second
                        event(log, "heartbeat_failed", level=logging.WARNING, error=str(exc))
                    failing = True
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    # --- status ------------------------------------------------------------------------

    def all_services(self) -> dict[str, Service]:
        """The config file's services and the Docker containers' (``web@app1:80``): what
        `nerve maint` and /health/{service} can name."""
        return {**(self.docker.services if self.docker else {}), **self.services}

    def healthy(self) -> bool | Health:  # (and whether the last good config runs)
        ok = not self._stopping and not any(s.crashed for s in self.services.values())
        return config_health(ok, self.source)

    def status(self) -> dict[str, Any]:
        return {
            "instance_id": self.config.instance_id,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "config": str(self.config_path) if self.config_path else None,
            "state_dir": str(self.store.directory) if self.store.directory else None,
            **config_state(self.source),  # the file, or its last good copy (nerve/last_good.py)
            "services": {name: s.status() for name, s in sorted(self.services.items())},
            "docker": self.docker.status() if self.docker is not None else None,
        }

    # --- reload ----------------------------------------------------------------------------

    async def reload_from_file(self) -> bool:
        """SIGHUP: re-read the config file; False (and the old config keeps running) if it
        is invalid."""
        if self.config_path is None:
            return False
        # (one at a time: SIGHUPs are folded by nerve/reload_fold.py)
        self.reload_retry.begin()
        return await self._reload_from_file(self.config_path)

    def close_reloads(self, restart: bool = False) -> int:
        """A stop begins: no reload plan is applied from now on. Returns the changes of the
        plan being applied now (0: none), which the restart stop cannot leave half-done.

        A restart stop during a reload's hold (its file written in place a moment ago) lets
        that reload finish instead (``finishing_held``: the caller awaits it): the SIGHUP
        said the file changed and the wait is bounded (HOLD_MAX_S), so its removals are
        withdrawn before the stop leaves the rest; abandoned, a service removed from the
        file stayed registered for a next nerve that has no such service (review s32: api
        left in ZooKeeper 10 s after the old nerve exited). Cut short and read at once, the
        file could still be the prefix the hold waits out."""
        self._reloads_closed = True
        self._finish_held = restart and self._holding
        return self._applying

    @property
    def finishing_held(self) -> bool:
        return self._finish_held

    async def _reload_from_file(self, path: Path) -> bool:
        try:
            new, warnings, read = await self._read_settled(path)
        except ChildNotStarted as exc:  # (our limit, not the file's fault: tried again)
            return self.reload_retry.not_checked(path, exc)
        except ConfigError as exc:
            return self._rejected(exc.lines)
        for line in warnings:
            event(log, "config_warning", level=logging.WARNING, warning=line)
        # Its set's name when it changed (not refused for a changed set: a service moving
        # between two nerves, the receiver reloaded first, would be withdrawn for good:
        # review s28); refused when another nerve runs this very set (a duplicated config)
        old_names = held()
        try:
            dropped = retake_for_reload(self.config, new)
        except ReloadClash as clash:
            return self._rejected([str(clash)])
        applied = False
        try:  # ({}: not applied, a stop began: the running config's name stays, as on failure)
            applied = bool(await self.reload(new))
            if applied:
                self._read_stamps = read
        finally:  # (once applied: its withdrawals are under way; failed: the old name stays)
            release(dropped if applied else held() - old_names)
        return applied

    async def _read_settled(self, path: Path) -> tuple[NerveConfig, list[str], dict[Path, Stamp]]:
        """The file read, and once still if it was written in place (or is new) a moment
        ago: perhaps a prefix (`>` then `>>`), unless a whole JSON object (smartstack.
        reload_settle); with the stamps of what was read."""
        read = file_stamps(path, [self.config.service_conf_dir])  # (as read: before)
        new, warnings = await self._load(path)
        dirs = (self.config.service_conf_dir, new.service_conf_dir)
        self._holding = True  # (a restart stop now lets it finish: close_reloads)
        try:
            waited = await hold_fresh_write(path, dirs, self._read_stamps, log, read)
        finally:
            self._holding = False
        if waited:
            read = file_stamps(path, dirs)
            new, warnings = await self._load(path)
        return new, warnings, {**file_stamps(path, dirs), **read}  # (a new conf dir's: after)

    async def _load(self, path: Path) -> tuple[NerveConfig, list[str]]:
        if self.source is not None:
            return await self.source.reload()
        return load_nerve_config(path, self.instance_id_override, self.strict)

    def _rejected(self, errors: list[str]) -> bool:
        self.metrics.reloads.labels("rejected").inc()
        event(log, "config_rejected", level=logging.ERROR, file=str(self.config_path),
              errors=" | ".join(errors), detail="the running config stays in effect")  # fmt: skip
        return False

    async def reload(self, new: NerveConfig) -> dict[str, list[str]]:
        """Apply a new config; returns which services were kept, changed, renamed (as
        ``old->new``), added, removed."""
        async with self._reload_lock:
            if self._stopping:
                return {}
            plan = plan_reload(self.config.instance_id, self.service_configs,
                               new.instance_id, new.services)  # fmt: skip
            changes = plan_changes(plan)
            if self._reloads_closed and not self._finish_held:
                # A stop began while this reload read the file (its child answered since).
                # Not applied: nothing changed yet, so what a restart stop leaves is what the
                # running config vouches for, as after a file edited without a SIGHUP (the
                # next nerve applies the file at its start). Applied now, the stop would cut
                # its changes half-way; withdrawing everything instead would take every
                # healthy instance out for the next nerve's `rise` checks (review s32).
                event(log, "reload_abandoned", changes=changes,
                      detail="a stop began before it changed anything: not applied")  # fmt: skip
                return {}
            # (no await from the plan to its first change: a stop finds no plan being
            # applied, or one that has begun: close_reloads)
            self._applying = changes
            try:
                return await self._apply_plan(new, plan)
            finally:
                self._applying = 0

    async def _apply_plan(self, new: NerveConfig, plan: ReloadPlan) -> dict[str, list[str]]:
        summary: dict[str, list[str]] = {k: [] for k in (
            "unchanged", "checks_changed", "re_registered", "renamed", "added", "removed",
        )}  # fmt: skip
        if new.statsd != self.config.statsd:  # (the new one first: no gap in the figures)
            old, self.metrics.statsd = self.metrics.statsd, make_stats(new.statsd)
            old.close()
        restart = [k for k in ("admin", "state_dir", "docker")
                   if getattr(new, k) != getattr(self.config, k)]  # fmt: skip
        if restart:
            event(log, "config_needs_restart", level=logging.WARNING, keys=", ".join(restart))
        # A registration being withdrawn may be the very one a new service writes: that
        # one starts once the old one is gone.
        retiring: Retiring = {}
        for name in plan.removed:
            where = placement(self.config.instance_id, self.service_configs[name])
            service = self.services[name]
            self._take(name)
            retiring[where] = self._retire(service)
            # A hand-over's new service not written yet (a moved address not risen): its
            # old registration goes too. (A move ignores the heir's wish, which retiring
            # sets: the old one stayed while its checks passed, for good: review s37.)
            pass_on(service, None)
            self.metrics.forget_service(name)
            summary["removed"].append(name)
        self.config = new
        for step in plan.steps:
            await self._apply(step, retiring)
            shown = f"{step.previous}->{step.name}" if step.change == "renamed" else step.name
            summary[step.outcome].append(shown)
        self.metrics.reloads.labels("ok").inc()
        event(log, "config_reloaded", **{k: ",".join(v) for k, v in summary.items() if v})
        return summary

    # --- stop ------------------------------------------------------------------------------

    async def stop(self, restart: bool = False) -> None:
        """Withdraw everything in parallel and close sessions, each step with a deadline;
        ``restart`` (SIGUSR2) leaves the healthy ones (nerve/restart_stop.py)."""
        if self._stopping:
            return
        self._stopping = True
        started = time.monotonic()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        services = list(self.services.values())
        containers = list(self.docker.services.values()) if self.docker is not None else []
        # (halted first: no check's verdict changes what is left while it is decided)
        await asyncio.gather(*(s.halt() for s in [*services, *containers]), return_exceptions=True)
        left = left_by([*services, *containers], restart)
        docker_stop = self.docker.stop(keep=left) if self.docker is not None else _no_containers()
        reporters = [s.reporter for s in services] + list(self._retiring)
        gone = [withdraws(r, left, restart) for r in reporters]
        own, containers_done = await asyncio.gather(
            asyncio.gather(*(self._withdraw(r, w) for r, w in zip(reporters, gone, strict=True))),
            docker_stop,
        )
        withdrawn = [ok for w, ok in zip(gone, own, strict=True) if w]
        withdrawn += containers_done
        if self._registries is not None:
            await self._bounded(self._registries.close(left), CLOSE_TIMEOUT, "close_sessions")
        if self.admin is not None:
            await self._bounded(self.admin.stop(), CLOSE_TIMEOUT, "close_admin")
        self.metrics.statsd.close()
        log_left(left, [*services, *containers])
        ok = sum(withdrawn)
        event(log, "nerve_stopped", withdrawn=ok, failed=len(withdrawn) - ok, left=len(left),
              seconds=round(time.monotonic() - started, 3))  # fmt: skip

    async def _withdraw(self, reporter: Reporter, withdraw: bool = True) -> bool:
        return await self._bounded(
            reporter.stop(withdraw=withdraw), WITHDRAW_TIMEOUT, "withdraw", reporter.service
        )

    async def _bounded(self, coro: Any, timeout: float, what: str, service: str = "") -> bool:
        try:
            await asyncio.wait_for(coro, timeout)
            return True
        except Exception as exc:  # shutdown goes on: sessions and leases expire by themselves
            event(
                log,
                f"{what}_failed",
                level=logging.WARNING,
                service=service or None,
                error=f"{type(exc).__name__}: {str(exc)[:160]}",
            )
            return False


async def _no_containers() -> list[bool]:
    return []
