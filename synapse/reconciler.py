"""The reconciler: the loop that turns watcher reports into the desired services.

(One meaning per name: the reconciler *hands over* the desired state in *rounds*; the
HAProxy side *applies* it; its background *sweep* checks HAProxy for drift.)

Watchers call ``report()`` (cheap: it stores the report and wakes the loop). Coalescing
is leading-edge: an idle loop hands the first change over at once, and whatever arrives
while that hand-over runs is handed over together right after it (a deploy touching fifty
servers costs a few hand-overs; a lone change waits for nothing). While reports keep
arriving during rounds, the next round waits a few ms for more (``synapse.pacing``);
``haproxy.coalesce_ms`` (default 0) is a fixed window.

Each round computes the servers (``synapse.selection``) of the services that reported
since the last round (all after a start or a failure; after a config reload, those whose
config changed: ``synapse.reload_diff``), hands the complete ``list[DesiredService]`` to
the applier (``synapse.contract.Applier``: the HAProxy controller), then updates file_output
and the state file (at most once per STATE_FILE_INTERVAL: ``synapse.round_outputs``). An
unchanged service is handed over as the very same DesiredService object (the applier skips
it cheaply). Watch event → applier returned is ``synapse_watch_to_applied_seconds``. At
startup it waits up to ``startup_wait`` for every watcher's first report; a service whose
registry has not answered starts from the state file (servers younger than
``state_file_ttl``), else what the running HAProxy serves it (``adopted_servers``), else its
``default_servers``; one a SIGHUP adds with nothing to start from waits likewise
(``reload_diff.Arrivals``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from smartstack.backoff import Backoff
from smartstack.logs import event
from smartstack.modelbase import ValidationError
from smartstack.tasks import wait_event
from synapse.adopted_servers import ORIGIN_HAPROXY, AdoptedServers
from synapse.apply_latency import ApplyLatency
from synapse.change_gate import ChangeGate, collector_held
from synapse.config import SynapseConfig
from synapse.contract import Applier, ApplyOutcome, ApplyResult, RecordSink
from synapse.desired_list import DesiredList
from synapse.gc_start import first_apply
from synapse.generator_checks import GeneratorChecks
from synapse.metrics import SynapseMetrics
from synapse.model import DesiredService, Report
from synapse.options_report import report_options
from synapse.pacing import Pacer
from synapse.previous_kept import PreviousKept
from synapse.reload_diff import (
    Arrivals,
    Holds,
    Pending,
    ServiceState,
    carry_over,
    hold_bound,
    policy_changed,
)
from synapse.restart_held import RestartHeld
from synapse.round_outputs import RoundOutputs
from synapse.selection import ORIGIN_DISCOVERY, ORIGIN_STATE_FILE, Selection, select_servers
from synapse.state_cache import StateCache
from synapse.state_recheck import STATE_FILE_READ, waiting_for_state_file, watch_wall_clock
from synapse.status import service_status
from synapse.zone_apply import ZoneRouter

log = logging.getLogger("synapse.reconciler")

GENERATOR_WAIT = 5.0  # the first hand-over waits this long for generator settings' child
CHANGES_KEPT = 256  # recent (watch event, HAProxy acknowledged) pairs on /status
REFRESH_INTERVAL = 60.0  # how often the state file is considered for its periodic refresh
RETRY_BASE, RETRY_CAP = 0.5, 30.0  # a failed hand-over is retried with this backoff


class Reconciler:
    def __init__(
        self,
        config: SynapseConfig,
        applier: Applier | None,
        metrics: SynapseMetrics,
        state_cache: StateCache | None = None,
        file_output: RecordSink | None = None,
    ) -> None:
        self.change_gate = ChangeGate()  # the applier's when there is one (``applier``)
        self.applier = applier
        self.metrics = metrics
        self.state_cache = state_cache
        self.file_output = file_output
        self._config = config
        evacuations = state_cache.evacuations if state_cache else None
        self.zones = ZoneRouter(config.zone, evacuations, metrics)
        self.zones.configure(config)
        self._services: dict[str, ServiceState] = {
            name: ServiceState(cfg, cfg) for name, cfg in config.services.items()
        }
        self._desired = DesiredList(lambda made: self.zones.routed(made))  # kept between rounds
        self._touched: set[str] = set()  # services whose desired was reset since it was built
        self.restart_held = RestartHeld(self._due)  # a restart's typo: the file's servers kept
        self.previous_kept = PreviousKept()  # use_previous_backends while nothing is listed
        self._gen_checks = GeneratorChecks(self._revisit)  # (a child's, plain models)
        self._dirty = asyncio.Event()
        self._all_reported = asyncio.Event()
        self._pending = Pending()
        self._arrivals = Arrivals(self._due)  # a SIGHUP's new services, until reported
        self._holds = Holds(self._due, lambda: hold_bound(self._config))  # (partial reports)
        self._adopted = AdoptedServers()  # what HAProxy runs, for those with nothing else
        self._force = True  # the first hand-over always happens
        self._latency = ApplyLatency(metrics)  # watch event -> applied
        self.outputs = RoundOutputs(  # file_output and the state file, after each round
            metrics,
            lambda: self.state_cache,
            lambda: (self.selections(), list(self._services), self.generators()),
        )
        self.pacer = Pacer(config.haproxy)  # waits a little before a round in a stream
        self.started = False
        self._backing_off = False  # after a failed round: no change can be applied now
        self.applies = 0
        self.last_apply: dict[str, Any] | None = None
        self.last_error: str | None = None
        # (watch event, HAProxy answered the runtime commands) per change applied at
        # runtime, time.monotonic: synapse's own part of a change, for /status.
        self.changes: deque[tuple[float, float]] = deque(maxlen=CHANGES_KEPT)
        self._unreported: set[str] = set()
        # each apply's config and outcome (``synapse.last_good_run``: the copy follows HAProxy)
        self.after_apply: Callable[[SynapseConfig, ApplyResult], None] = lambda *_: None
        self._check_all_reported()

    @property
    def applier(self) -> Applier | None:
        return self._applier

    @applier.setter
    def applier(self, applier: Applier | None) -> None:
        self._applier = applier  # (its background work waits for the changes reported here)
        self.change_gate = applier.change_gate if applier is not None else self.change_gate

    @property
    def takes_changes(self) -> bool:  # (not before the start, nor during a backoff)
        return self.started and not self._backing_off

    def report(self, report: Report) -> None:
        """The watchers' sink: store the latest full list and wake the loop. Never blocks."""
        service = self._services.get(report.service)
        if service is None:  # a late report from a watcher of a removed service
            return
        service.report = report
        self._arrivals.drop(report.service)  # (its report is here: no timer's round later)
        self.pacer.arrived()
        if self.takes_changes:  # (before the start: the first round hands all over)
            self.change_gate.change()  # background steps wait until its round has ended
        self._use_generator(report.service, service, report.generator_config)
        self._pending.event_times.append(report.event_time)
        self._pending.reasons.add(f"{report.method}:{report.service}")
        self._pending.services.add(report.service)
        self._dirty.set()
        self._unreported.discard(report.service)  # a set: O(1) per report, not O(services)
        if not self._unreported:
            self._all_reported.set()

    def set_config(self, config: SynapseConfig) -> None:
        """Take a reloaded config (SIGHUP): only changed services are selected and handed
        over anew (``reload_diff``); watchers' reports are kept for kept services."""
        everything = policy_changed(self._config, config)
        carried, before = carry_over(self._services, config), self._services
        self._config = config
        self.pacer.configure(config.haproxy)
        self.zones.configure(config)
        self._services = carried.services
        self._check_all_reported()  # a service the SIGHUP added has no report yet
        self._arrivals.add(carried.changed, self._services, config.startup_wait, before)
        self._gen_checks.retain(self._services)
        self.restart_held.retain(self._services)  # (per-name state of removed services)
        self.previous_kept.retain(self._services)
        for name, generator in carried.regenerate.items():
            self._use_generator(name, self._services[name], generator)
        if everything:
            self.wake("config reload")
            return
        self._pending.reasons.add("config reload")
        self._pending.services.update(carried.changed)
        self._pending.hand_over = True
        self._dirty.set()

    def wake(self, reason: str, select: bool = True) -> None:
        """Hand everything over again without a report (the zone evacuations changed);
        ``select`` False: without selecting every service again (zone_health: HAProxy's
        view changed, the registry's did not)."""
        self._pending.reasons.add(reason)
        self._pending.hand_over = True
        self._force = self._force or select
        self._dirty.set()

    def _use_generator(self, name: str, service: ServiceState, found: Mapping[str, Any]) -> None:
        """Generator settings from the registry (or the state file) changed: the service's
        config is the file's with them under it; an invalid merge keeps the file's."""
        if found == service.generator:
            return
        service.generator = found
        try:  # (plain models: the current config until a child answers, then _revisit)
            config = self._gen_checks.config(name, service.file_config, found, service.config)
        except ValidationError as exc:
            event(log, "generator_config_invalid", level=logging.WARNING, service=name,
                  error=str(exc).replace("\n", " ")[:300])  # fmt: skip
            config = service.file_config
        if config != service.config:
            event(log, "generator_config_applied", service=name, keys=sorted(found))
            service.config = config
            service.desired = None
            self._touched.add(name)
            self._force = True  # the selection may not change; HAProxy's config does

    def _revisit(self, name: str) -> None:
        """A child validated a service's generator settings: use its answer now."""
        service = self._services.get(name)
        if service is not None:
            found, service.generator = service.generator, {}
            self._use_generator(name, service, found)
            self._dirty.set()

    def _due(self, name: str) -> None:
        """Select ``name`` again: a SIGHUP's new service waited ``startup_wait`` for its
        report (as at a start), or a partial report's hold ended."""
        self._pending.services.add(name)
        self._dirty.set()

    def _check_all_reported(self) -> None:
        self._unreported = {n for n, s in self._services.items() if s.report is None}
        if not self._unreported:
            self._all_reported.set()

    async def run(self) -> None:
        startup_wait = self._config.startup_wait
        await wait_event(self._all_reported, startup_wait)
        for name, service in self._services.items():  # the state file's, validated in time
            if service.report is None and self.state_cache is not None:
                self._use_generator(name, service, self.state_cache.generator(name))
        await self._gen_checks.settled(GENERATOR_WAIT)  # a child checks them (plain models)
        silent = sorted(n for n, s in self._services.items() if s.report is None)
        if silent:
            event(log, "startup_without_registry", level=logging.WARNING, services=silent,
                  waited=startup_wait)  # fmt: skip
            await self._adopted.read(self.applier, self._config, silent, self.state_cache)
        self._pending.reasons.add("startup")
        self.started = True
        backoff = Backoff(RETRY_BASE, RETRY_CAP)
        clock = asyncio.get_running_loop().create_task(watch_wall_clock(self))
        try:
            while True:
                if not await self._wait_dirty():
                    await self._periodic()
                    continue
                await self.pacer.wait()  # in a stream: a few ms for a bigger batch (and the
                # round starts): what arrives from here on waits for the next round.
                self._dirty.clear()
                with collector_held():  # (the collection that was due: after it)
                    handed_over = await self.run_round()
                if not self._dirty.is_set():
                    self.change_gate.done()
                if handed_over:
                    backoff.reset()
                    self.pacer.round_ended()
                else:
                    self.pacer.failed()
                    self.change_gate.done()  # (nothing applies in the sleep: no one waits)
                    self._backing_off = True  # (a stop during the sleep ends the loop)
                    await asyncio.sleep(backoff.next())
                    self._backing_off = False
                    self.change_gate.change()  # the retry hands the changes over
                    self._dirty.set()
        finally:
            clock.cancel()
            await self.outputs.final()

    async def _wait_dirty(self) -> bool:
        if self._force:
            return True
        return await wait_event(self._dirty, REFRESH_INTERVAL)

    async def _periodic(self) -> None:
        if self.state_cache is not None:
            services = list(self._services)
            await asyncio.to_thread(
                self.state_cache.refresh, self.selections(), services, self.generators()
            )
        self.recheck_state_file()

    def retry_state_file(self) -> None:
        """A write outside the rounds failed (an evacuation, a clock step, a refresh): the
        round writer retries it each STATE_FILE_INTERVAL until the disk takes it."""
        if self.state_cache is not None and self.state_cache.failing:
            self.outputs.state_file_due()

    def state_file_due(self) -> None:
        """Write the state file within STATE_FILE_INTERVAL (a held swap's start: its
        ``held_for`` must not wait for the next change or refresh, a kill -9 meanwhile)."""
        self.outputs.state_file_due()

    def recheck_state_file(self) -> None:  # (the wall clock corrected: synapse.state_recheck)
        for name in waiting_for_state_file(self._services, self.state_cache):
            self._due(name)
        self.retry_state_file()  # (a refresh or a clock step's write failed)

    async def run_round(self) -> bool:
        """Compute the servers of the services that changed and hand everything over; False
        when the apply failed (reports arriving meanwhile mark the next round)."""
        pending, self._pending = self._pending, Pending()
        # Taken now: a SIGHUP or generator change during the apply forces the next round.
        forced, self._force = self._force, False
        everything = forced or not self.started
        changed = self._select_all(None if everything else pending.services)
        try:
            return await self._hand_over(pending, changed, forced or pending.hand_over)
        finally:
            # A reloaded config may remove a service or disable its file: all files, as ever.
            try:  # (file_output reports its own disk errors; anything else: said, never fatal)
                await self.outputs.write(
                    self.file_output, self._services, changed, everything or pending.hand_over
                )
            except Exception as exc:
                event(log, "outputs_write_failed", level=logging.ERROR,
                      error=f"{type(exc).__name__}: {exc}"[:500])  # fmt: skip

    async def _hand_over(self, pending: Pending, changed: list[str], forced: bool) -> bool:
        if self.applier is None or not (changed or forced):
            return True  # (without HAProxy nothing is forced: file_output only)
        reason = ", ".join(sorted(pending.reasons))[:300] or "update"
        desired, config = self.desired(), self._config
        started = time.monotonic()
        try:
            with first_apply():  # the start's objects out of the cycle collector's way
                result = await self.applier.apply(desired, reason)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.metrics.applies.labels("error").inc()
            self.metrics.statsd.incr("synapse", "reconcile", "error")
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            log.exception("applying to HAProxy failed (reason: %s)", reason)
            # Nothing is lost: the next round re-sends the whole desired state.
            pending.merge(self._pending)
            self._pending = pending
            self._force = True
            return False
        now = time.monotonic()
        self.applies += 1
        self.last_error = None
        outcome = result.reload
        self.metrics.applies.labels(outcome.value).inc()
        self.metrics.send_apply_stats(result, now - started)
        self.after_apply(config, result)
        self._latency.observe(self.applier, pending.event_times, result)
        if result.acked_at is not None and outcome is ApplyOutcome.NONE:
            self.changes.extend((moment, result.acked_at) for moment in pending.event_times)
        self.last_apply = {
            "reason": reason,
            "at": time.time(),
            "duration_s": round(now - started, 4),
            "changed": changed,
            "haproxy": outcome.value,
        }
        # Per change: at debug; what reached HAProxy is the controller's one info line.
        event(log, "applied", level=logging.DEBUG, reason=reason,
              changed=",".join(changed)[:200], ms=round((now - started) * 1000, 2))  # fmt: skip
        return True

    def _select_all(self, reported: set[str] | None = None) -> list[str]:
        """Select again the services in ``reported`` (None: all) and those without a report
        (their state file entries age); the names whose selection changed."""
        policy = self._config.haproxy.registry_server_options if self._config.haproxy else None
        changed = []
        # Per change: the reported services and those without a report (a superset of
        # them: no loop over every service).
        names = self._services if reported is None else sorted(reported | self._unreported)
        cached = self.state_cache.cached if self.state_cache else lambda _name: None
        for name in names:
            service = self._services.get(name)
            if service is None or (
                reported is not None and name not in reported and service.report is not None
            ):
                continue
            if service.report is not None:  # (a partial one with what the service had)
                found, origin = self._holds.found(service, cached), ORIGIN_DISCOVERY
            else:  # the state file's, while it is all there is or nothing was (a SIGHUP's
                # new discovery: nothing known, the previous list stays)
                found, origin, kept = None, ORIGIN_STATE_FILE, service.selection
                if self.state_cache and (kept is None or kept.origin in STATE_FILE_READ):
                    found = self.state_cache.cached(name)
                    self._use_generator(name, service, self.state_cache.generator(name))
                if not found and (running := self._adopted.take(name, kept)) is not None:
                    found, origin = running, ORIGIN_HAPROXY  # (what HAProxy runs: not emptied)
                if self._arrivals.holds(name, found):
                    continue  # (a SIGHUP's new service: no frontend before its report)
            previous = service.selection  # (a restarted synapse's first report may be empty)
            if previous is None and not found and service.report and self.state_cache:
                previous = self.state_cache.selection(name, service.config, policy)
            filters = service.report.filters if service.report is not None else None
            selection = select_servers(service.config, found, previous, policy, origin, filters)
            selection = self.restart_held.select(name, service, selection, self.state_cache, policy)
            self.previous_kept.observe(name, service.report, selection, self.restart_held.held)
            report_options(name, selection, service)
            if selection.leader_failed and not (
                service.selection and service.selection.leader_failed
            ):
                event(log, "leader_election_failed", level=logging.WARNING, service=name,
                      reason="not every server has a sequence number")  # fmt: skip
            if selection != service.selection:
                changed.append(name)
                service.desired = None
                self._touched.add(name)
            service.selection = selection
            self.metrics.servers.labels(name).set(len(selection))
        return changed

    def generators(self) -> dict[str, Mapping[str, Any]]:
        return {n: s.generator for n, s in self._services.items() if s.generator}

    def selections(self) -> dict[str, Selection]:
        return {n: s.selection for n, s in self._services.items() if s.selection is not None}

    def desired(self) -> list[DesiredService]:
        """What HAProxy should run: a service whose selection did not change is the same
        object as last time (``synapse.desired_list``: only what changed is looked at)."""
        built = self._desired.build(self._services, self._touched)
        self._touched.clear()  # (kept when the build raised: the next one looks again)
        return built

    def service_status(self) -> dict[str, dict[str, Any]]:
        return service_status(self._services)
