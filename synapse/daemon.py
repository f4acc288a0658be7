"""The synapse daemon: watchers -> reconciler -> HAProxy controller, on one asyncio loop.

``run(config, args)`` is called by ``synapse.cli``. It starts the HAProxy controller, one
watcher per service, the reconciler and the admin server (/health, /status, /metrics and an
HTML status page at /: ``synapse.admin_routes``), then waits for a signal:
- SIGTERM / SIGINT: stop watchers, the controller (and a managed HAProxy), the admin; exit 0.
- SIGHUP: re-read the config file. An invalid file is logged and the running config stays;
  else removed services' watchers stop, a re-pointed service's new watcher replaces the
  running one at its first complete report (``synapse.watcher_swap``), HAProxy follows.
Registry outages and session expiries never end the daemon: watchers keep their servers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from smartstack import identity_lock, sd_notify
from smartstack.configfile import ConfigError
from smartstack.early_signals import take_over_sighup
from smartstack.logs import event
from smartstack.reload_settle import Stamp, file_stamps, hold_fresh_write
from smartstack.spawn_limits import ChildNotStarted, RetryNotChecked
from smartstack.statsd import make_stats
from smartstack.stop_signals import hold_while_stopping, ignore_after_loop
from smartstack.tasks import cancel_and_wait
from smartstack.zookeeper import ZooKeeperPool
from synapse import gc_start, zone_health
from synapse.background_import import import_in_thread
from synapse.config import ServiceConfig, SynapseConfig, load_synapse_config, service_cache
from synapse.contract import Applier
from synapse.daemon_parts import make_controller, make_file_output, make_state_cache, state_key
from synapse.etcd_connections import EtcdConnections
from synapse.last_good import watch_last_good
from synapse.last_good_run import CopyFollowsHAProxy
from synapse.metrics import SynapseMetrics
from synapse.model import Report, Sink
from synapse.preflight import vet_reload
from synapse.reconciler import Reconciler
from synapse.restart_held import ListingKeys
from synapse.selection import ORIGIN_DEFAULT, Selection
from synapse.server_info import ServerInfoCollector
from synapse.server_options import warn_about
from synapse.stop_delay import delay_stop, soft_stop_now
from synapse.watcher_swap import ServiceWatchers
from synapse.watchers import Watcher, WatcherContext, create_watcher

if TYPE_CHECKING:
    from smartstack.admin import AdminServer, Health
    from synapse.config import ManagedHAProxy
    from synapse.config_load import ConfigSource
    from synapse.docker_services import DockerServiceSource
    from synapse.edge_config import DockerServicesConfig

log = logging.getLogger("synapse.daemon")

# How long a thread may hold the GIL while another waits for it (CPython's: 5 ms). A change's
# path on the loop takes it back after each socket wait; each cost up to 5 ms while a thread
# computed (the state dump's digest, the config file write, kazoo's): the loaded p99.
GIL_SWITCH_INTERVAL = 0.0005
EXIT_OK, EXIT_STARTUP_FAILED = 0, 1
STOP_STEP_TIMEOUT = 10.0  # per part; the controller's: + managed.stop_grace (HAProxy's soft stop)


def run(config: SynapseConfig, args: argparse.Namespace, source: ConfigSource | None = None) -> int:
    """Run synapse until SIGTERM/SIGINT; the exit code. ``source``: synapse.config_load's."""
    daemon = SynapseDaemon(config, getattr(args, "config", None))
    daemon.config_source = watch_last_good(daemon.metrics, source)  # (synapse.last_good)
    daemon.strict = getattr(args, "strict", False)  # holds for SIGHUP reloads too
    daemon.zone_flag = getattr(args, "zone", None)  # --zone beats the file on SIGHUP too
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        return asyncio.run(daemon.main())
    finally:
        ignore_after_loop()


class SynapseDaemon:
    def __init__(self, config: SynapseConfig, config_path: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.strict = False  # --strict: unknown keys refuse a reloaded file too
        self.config_cache: Any = None  # per-service results of the last in-process load
        self.config_source: ConfigSource | None = None  # None: loaded here, on pydantic
        self.zone_flag: str | None = None
        self.registry = CollectorRegistry()
        self.metrics = SynapseMetrics(self.registry)
        self.metrics.statsd = make_stats(config.statsd)
        self.registry.register(ServerInfoCollector(self._current_servers))
        self.controller: Applier | None = None
        self.reconciler: Reconciler | None = None
        self.service_watchers = ServiceWatchers(
            self._create_watcher, self._report, serving=self._serving, held=self._swap_held
        )
        self.watchers: dict[str, Watcher] = self.service_watchers.active  # one per service
        self._listing_key = ListingKeys(self.service_watchers)  # (the state file's: restart_held)
        self.admin: AdminServer | None = None
        self.zk_pool: ZooKeeperPool | None = None
        self._etcd = EtcdConnections(lambda: [s.discovery for s in self.config.services.values()])
        self._ctx: WatcherContext | None = None
        self._reconciler_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._background: set[asyncio.Task[bool]] = set()
        self._reload_waiting = False  # a SIGHUP's reload waits for the lock: later ones join it
        not_checked = lambda error: self._config_reload_failed(error, "not_checked")  # noqa: E731
        self._retry = RetryNotChecked(log, self._on_sighup, not_checked)  # (child not started)
        self.started_at = time.time()
        self.last_config_reload: dict[str, Any] | None = None
        self.file_config = config  # without the services of docker_services
        # its files as of the last successful read (smartstack.reload_settle)
        self._read_stamps: dict[Path, Stamp] = self._stamps(config)
        self.docker_services: DockerServiceSource | None = None
        self._sighup_in_start = False  # while docker_services' start waited: reload after
        self._copy = CopyFollowsHAProxy(self)  # the last good copy follows HAProxy

    # --- lifecycle -------------------------------------------------------------------------

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        identity_lock.answer_on(loop)  # a waiting copy is told who holds the files (review s28)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        take_over_sighup(loop, self._on_sighup)  # (and one that came while it started)
        try:
            await self.start()
        except Exception as exc:
            log.exception("synapse failed to start")
            event(log, "startup_failed", level=logging.ERROR, error=f"{type(exc).__name__}: {exc}")
            await self.stop()
            return EXIT_STARTUP_FAILED
        sd_notify.ready()  # systemd (Type=notify): started, and a SIGHUP is a reload now
        await self._stop.wait()
        event(log, "stopping")
        haproxy = getattr(self.controller, "managed_haproxy", None)  # (None: not managed)
        config = self._managed_config()
        # (a second SIGTERM killed it mid-stop; a third one now: HAProxy soft-stopped first)
        hold_while_stopping(loop, log, before_end=lambda: soft_stop_now(config, haproxy))
        await delay_stop(config, haproxy)  # (HAProxy serves on: an app drains)
        await self.stop()
        event(log, "stopped")
        return EXIT_OK

    def _on_sighup(self) -> None:
        # still starting (the file is being read anyway), or a reload that will read the file
        # is waiting for the lock: 50 SIGHUPs are one or two children, not 50
        if self.reconciler is None and self.docker_services is not None:
            self._sighup_in_start = True  # after the file was read: reloaded once started
            return
        if self.reconciler is None or self._reload_waiting:
            return
        self._reload_waiting = True
        task = asyncio.get_running_loop().create_task(self.reload_config())
        self._background.add(task)  # keep a reference until it is done
        task.add_done_callback(self._background.discard)
        self.service_watchers.hold.during(task)  # no list shrinks until it is applied

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.zk_pool = ZooKeeperPool(loop)
        self._ctx = WatcherContext(
            loop=loop,
            metrics=self.metrics,
            zk_pool=self.zk_pool,
            etcd_connection=self._etcd.connection,
        )
        docker = self.config.docker_services
        if docker is not None and docker.enabled:  # services from container labels
            await self._start_docker_services(docker)
        warn_about(self.config)
        state_cache = make_state_cache(self.config, key_of=self._listing_key)
        self.reconciler = Reconciler(
            self.config, None, self.metrics, state_cache, make_file_output(self.config)
        )
        self._ctx.change_coming = self._change_coming
        self._copy.attach(self.reconciler)  # (synapse.last_good_run: before any SIGHUP)
        for name, service in self.config.services.items():
            await self.service_watchers.start(name, service)
        # The registry first: the HAProxy side's modules (~0.2 s) are imported in a thread
        # while the watchers connect and read (after the watchers' own imports: etcd's gRPC),
        # so the loop handles the registry's answers in between instead of after. Nothing
        # is handed over before the controller is set.
        if self.config.haproxy is not None:
            await import_in_thread("synapse.haproxy.controller")
        # (the reconciler takes its change gate: background work waits for changes)
        self.controller = self.reconciler.applier = make_controller(self.config, self.registry)
        if self.controller is not None:
            await self.controller.start()
        # Listening before the first hand-over (503 until HAProxy runs the desired state):
        # whoever sees HAProxy answer can ask synapse. (~20 ms; the reads go on meanwhile.)
        await self._start_admin()
        self._reconciler_task = loop.create_task(self._run_reconciler(), name="reconciler")
        loop.call_later(gc_start.START_LIMIT_S, gc_start.settle)  # should no hand-over come
        if self.docker_services is not None:  # its changes are applied from now on
            self.docker_services.go_live()
            if self._sighup_in_start:
                self._on_sighup()
        event(log, "started", services=len(self.config.services),
              haproxy=self.controller is not None)  # fmt: skip

    async def _start_docker_services(self, docker: DockerServicesConfig) -> None:
        """The containers' services are in the config the reconciler starts with (the
        previous run's, saved; or Docker's first answer): a restart keeps them in the
        adopted HAProxy instead of removing them until Docker answers."""
        from synapse.docker_services import DockerServiceSource  # only a config with it
        from synapse.docker_services_saved import saved_path

        loop = asyncio.get_running_loop()
        source = DockerServiceSource(docker, loop, self._apply_docker, saved_path(self.config))
        self.docker_services = source
        await source.begin(self.config.startup_wait)
        self.config = source.merge(self.file_config)

    def _change_coming(self) -> None:
        """A ZooKeeper event named a change whose data is being read: the HAProxy side's
        background steps wait for its report from now on (synapse.change_gate)."""
        reconciler = self.reconciler
        if reconciler is not None and reconciler.takes_changes:  # (before: the sweep first)
            reconciler.change_gate.expect()

    async def _run_reconciler(self) -> None:
        assert self.reconciler is not None
        try:
            async with asyncio.TaskGroup() as group:  # (the zone watch ends with it)
                group.create_task(zone_health.watch(self.reconciler))  # HAProxy's DOWN
                await self.reconciler.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # must not happen; without it nothing would update HAProxy
            log.exception("reconciler crashed; stopping synapse")
            self._stop.set()

    async def stop(self) -> None:
        """Stop every part, each bounded; one failing never keeps the others running.

        The managed HAProxy goes first (after the reconciler, so nothing restarts it): it
        runs in its own session, so if its stop were skipped it would outlive synapse.
        A SIGHUP's reload is cancelled first (its child killed; no retry of one) and a
        docker_services apply under way ends (bounded) before the lock is taken."""
        self._retry.begin()
        for task in list(self._background):
            await cancel_and_wait(task)
        held = False
        with contextlib.suppress(TimeoutError):
            held = await asyncio.wait_for(self._reload_lock.acquire(), STOP_STEP_TIMEOUT)
        self._listing_key.stopping()  # (the watchers' steps end the swaps: before the last write)
        steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("reconciler", self._stop_reconciler)
        ]
        managed = self._managed_config()
        bounds = {"HAProxy controller": STOP_STEP_TIMEOUT + (managed.stop_grace if managed else 0)}
        if self.docker_services is not None:
            steps.insert(0, ("docker_services", self.docker_services.stop))
        if self.controller is not None:
            steps.append(("HAProxy controller", self.controller.stop))
        steps += self.service_watchers.stop_steps()  # (a swap's two, the replaced ones)
        if self.admin is not None:
            steps.append(("admin server", self.admin.stop))
        if self.zk_pool is not None:
            steps.append(("ZooKeeper connections", self.zk_pool.close_all))
        steps += [(f"etcd {conn.endpoints}", conn.close) for conn in self._etcd.values()]
        for what, step in steps:
            try:
                await asyncio.wait_for(step(), bounds.get(what, STOP_STEP_TIMEOUT))
            except Exception:
                log.exception("stopping the %s failed", what)
        self.watchers.clear()
        self.admin = None
        self.metrics.statsd.close()
        self._etcd.clear()
        if held:
            self._reload_lock.release()

    def _managed_config(self) -> ManagedHAProxy | None:
        return self.config.haproxy.managed if self.config.haproxy is not None else None

    async def _stop_reconciler(self) -> None:
        task, self._reconciler_task = self._reconciler_task, None
        await cancel_and_wait(task)

    # --- watchers ------------------------------------------------------------------------

    def _create_watcher(self, name: str, service: ServiceConfig, sink: Sink) -> Watcher:
        assert self._ctx is not None
        return create_watcher(name, service, sink, self._ctx)

    def _report(self, report: Report) -> None:
        if self.reconciler is not None:
            self.reconciler.report(report)

    # --- config reload (SIGHUP) ----------------------------------------------------------

    async def reload_config(self, refused: list[str] | None = None) -> bool:
        """Re-read the config file; keep running the old config when the new one is invalid.
        ``refused``: HAProxy refused the start's, its last good copy (synapse.last_good_run)."""
        async with self._reload_lock:  # (the copy's run: not once a SIGHUP replaced it)
            if self.config_path is None or (refused and not self._copy.still_refused()):
                return False  # (before ``begin``: a SIGHUP's retry stays)
            self._reload_waiting = False  # the file is read from here on: a SIGHUP is news
            self._retry.begin()
            try:
                read = self._stamps(self.file_config)  # (as read: before)
                new, warnings = await self._load_config(refused)
                # a file written in place (or new) a moment ago, not a whole JSON object:
                # perhaps a prefix (`>` then `>>`): read once still (smartstack.reload_settle)
                dirs = (self.file_config.service_conf_dir, new.service_conf_dir)
                held = hold_fresh_write(Path(self.config_path), dirs, self._read_stamps, log, read)
                if await held:
                    read = self._stamps(self.file_config)
                    new, warnings = await self._load_config(refused)  # once still
                read = {**self._stamps(new), **read}  # (a new service_conf_dir's: after)
                vet_reload(self.config, new, self.config_path)  # (HAProxy's limits, pid file)
            except ChildNotStarted as exc:  # (our limit, not the file's fault: tried again)
                return self._retry.not_checked(self.config_path, exc, self._copy.again(refused))
            except ConfigError as exc:
                self._config_reload_failed("; ".join(exc.lines))
                return False
            for line in warnings:
                event(log, "config_warning", level=logging.WARNING, warning=line)
            try:
                self.service_watchers.sighup()  # a stalled replacement is started afresh
                await self.apply_config(new)
            except Exception as exc:
                log.exception("applying the reloaded config failed")
                self._config_reload_failed(f"{type(exc).__name__}: {exc}")
                return False
            self._read_stamps = read
            self.metrics.config_reloads.labels("ok").inc()
            self.last_config_reload = {"at": time.time(), "ok": True, "error": None}
            event(log, "config_reloaded", path=self.config_path, services=len(new.services))
            return True

    def _stamps(self, config: SynapseConfig) -> dict[Path, Stamp]:
        path = self.config_path
        return {} if path is None else file_stamps(Path(path), [config.service_conf_dir])

    async def _load_config(
        self, refused: list[str] | None = None
    ) -> tuple[SynapseConfig, list[str]]:
        if self.config_source is not None:  # validated by a child (synapse.config_load)
            return await self.config_source.reload(refused)
        assert self.config_path is not None
        self.config_cache = self.config_cache or service_cache()  # (not made in plain mode)
        return load_synapse_config(self.config_path, self.zone_flag, self.strict, self.config_cache)

    def _config_reload_failed(self, error: str, result: str = "failed") -> None:
        self.metrics.config_reloads.labels(result).inc()
        self.last_config_reload = {"at": time.time(), "ok": False, "error": error[:1000]}
        if result == "failed":  # (not_checked: logged by RetryNotChecked, once per streak)
            event(log, "config_reload_failed", level=logging.ERROR, path=self.config_path,
                  error=error[:1000], keeping="running config")  # fmt: skip

    async def _apply_docker(self) -> None:
        """The containers' services changed: the file's config again, with them."""
        async with self._reload_lock:
            await self.apply_config(self.file_config)

    async def apply_config(self, new: SynapseConfig) -> None:
        """Swap to a new config: new watchers only where the discovery changed, each
        beside the running one until its first report (``synapse.watcher_swap``)."""
        assert self.reconciler is not None
        self.file_config = new
        if self.docker_services is not None:
            new = self.docker_services.merge(new)
        old = self.config
        if (old.haproxy is None) != (new.haproxy is None):
            raise ValueError("adding or removing the haproxy block needs a restart")
        if new.haproxy is not None and old.haproxy != new.haproxy and self.controller is not None:
            await self.controller.update_config(new.haproxy)
        if old.admin != new.admin:
            event(log, "admin_change_needs_restart", level=logging.WARNING)
        if old.statsd != new.statsd:
            self.metrics.statsd.close()
            self.metrics.statsd = make_stats(new.statsd)
        warn_about(new)
        self.config = new
        dropped = self.service_watchers.drop(new.services)  # (no report of theirs counts now)
        self.reconciler.set_config(new)
        self._copy.loaded(new)
        for watcher in dropped:
            await watcher.stop()
        for name in old.services.keys() - new.services.keys():
            self.metrics.forget_service(name)
        if new.file_output != old.file_output:
            self.reconciler.file_output = make_file_output(new)
        if state_key(new) != state_key(old):  # (the runtime evacuations move with it)
            evacuations = self.reconciler.zones.evacuations
            old_cache = self.reconciler.state_cache
            self.reconciler.state_cache = make_state_cache(new, evacuations, self._listing_key)
            await self.reconciler.outputs.moved(old_cache)
        await self.service_watchers.follow(new.services)

    # --- admin ---------------------------------------------------------------------------

    async def _start_admin(self) -> None:
        if self.config.admin.port is None:
            return
        # in a thread: the loop keeps taking the registry's answers meanwhile
        await import_in_thread("synapse.admin_routes")
        from smartstack.admin import start_or_log
        from synapse.admin_routes import admin_server

        server = admin_server(self)
        self.admin = server if server is not None and await start_or_log(server) else None

    def _serving(self, name: str) -> bool:
        """Whether HAProxy is given servers for ``name`` (a held SIGHUP swap's question)."""
        selection = self.reconciler.selections().get(name) if self.reconciler else None
        # (default_servers only: the new config gives them too, nothing to hold on to)
        return bool(selection and selection.servers and selection.origin != ORIGIN_DEFAULT)

    def _swap_held(self, name: str) -> None:
        """A SIGHUP's swap began to be held: its ``held_for`` goes to the state file now."""
        if self.reconciler is not None:
            self.reconciler.state_file_due()

    def _current_servers(self) -> tuple[dict[str, Selection], dict[str, ServiceConfig]]:
        selections = self.reconciler.selections() if self.reconciler else {}
        return selections, self.config.services

    def healthy(self) -> Health:
        """/health: 503 while synapse stops or HAProxy does not run the desired state
        (not running, a config that cannot be applied, a failed reload or start)."""
        from smartstack.admin import Health

        task = self._reconciler_task
        problems = []
        if task is None or task.done() or self._stop.is_set():
            problems.append("synapse is starting or stopping")
        if self.controller is not None:
            problems += self.controller.health()
        from synapse.daemon_status import degraded

        said = degraded(self)  # (HAProxy runs what synapse wants: said, still 200)
        return Health(not problems, {"problems": problems, **({"degraded": said} if said else {})})

    def status(self) -> dict[str, Any]:
        from synapse.daemon_status import daemon_status

        return daemon_status(self)
