"""nerve's Docker mode at run time: keep one nerve Service per labelled container port.

A ContainerWatch (smartstack.docker_events) follows the engine: event-driven (start, die, stop,
kill, health_status, ...) with a full resync on every (re)connect and every 60 s (a tcp://
engine's stream may die silently). On each change the wanted set
is recomputed from the labels (nerve.docker_config) and applied:
- a container that starts (and is healthy, if it has a HEALTHCHECK) gets a Service built by
  nerve.assemble from its labels; its checks then decide the registration as usual;
- a container that is being stopped, dies, is removed or turns unhealthy has its Service retired
  at once: the registration is withdrawn without waiting for a failing check;
- a changed address (restart with another published port) retires the old and, once the old
  registration is gone, starts the new.
A container's maintenance flag (`nerve maint web@app1:80`) belongs to that container: the same
container started again keeps it, a removed one loses it (nerve.docker_flags).
Crashes leave nothing stale: registrations are ephemeral znodes / leased etcd keys, and a
restarted nerve's reporters delete a previous run's copies (same instance id and record) when
they register; containers that died while nerve was down are simply not re-registered.
While dockerd is unreachable nothing changes (the last known state stays registered) until the
resync after reconnecting says otherwise. A nerve (re)started while dockerd is down registers
nothing until dockerd's first listing: a container remembered from before may be gone and its
address taken by another service's container, which a tcp check cannot tell apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from typing import Any

from prometheus_client import Counter, Gauge

from nerve.assemble import build_service
from nerve.config import NerveConfig
from nerve.docker_config import DockerModeConfig, LabelError, Wanted, selected, wanted_for
from nerve.docker_flags import ContainerFlags
from nerve.maintenance import MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.registries import Registries
from nerve.reporters.base import Reporter
from nerve.service import Service
from smartstack.docker_events import ContainerInfo, ContainerWatch, docker_base_url, label_filters
from smartstack.logs import event

log = logging.getLogger("nerve.docker")

# Containers saved by nerve 2b84de3..: removed at start (a stale copy must not be revived).
OLD_STATE_FILE = "docker-containers.state"
WITHDRAW_TIMEOUT = 2.5  # seconds, at shutdown (sessions and leases expire by themselves)


class DockerSource:
    def __init__(
        self,
        cfg: DockerModeConfig,
        *,
        instance_id: str,
        registries: Registries,
        metrics: NerveMetrics,
        store: MaintenanceStore,
    ) -> None:
        self.cfg = cfg
        self.instance_id = instance_id
        self.registries = registries
        self.metrics = metrics
        self.store = store
        self.flags = ContainerFlags(store, docker_base_url(cfg.url))
        self._resyncs = 0  # the watch's full listings seen (each one checks the flags)
        self.services: dict[str, Service] = {}
        self.wanted: dict[str, Wanted] = {}
        self._retiring: dict[str, asyncio.Task[None]] = {}
        self._bad: dict[str, str] = {}  # container id -> label error already logged
        self._stopping = False
        self.watch: ContainerWatch | None = None
        self.label_errors = Counter(
            "nerve_docker_label_errors",
            "Containers whose smartstack labels could not be used (each distinct error once)",
            registry=metrics.registry,
        )
        self.connected = Gauge(
            "nerve_docker_connected",
            "1 while nerve follows the Docker engine's events (0 also before it first answered)",
            registry=metrics.registry,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.watch = ContainerWatch(
            docker_base_url(self.cfg.url),
            loop,
            self._on_change,
            labels=label_filters(
                self.cfg.selector(self.instance_id), [f"{self.cfg.label_prefix}.service"]
            ),
            resync_interval=self.cfg.resync_interval,
            on_connection=lambda ok, _error: self.connected.set(1 if ok else 0),
            on_gone=self.flags.gone,
        )
        event(log, "docker_mode_started", engine=self.cfg.url, address=self.cfg.address)
        if self.store.directory is not None:  # written by an older nerve; never trusted
            with contextlib.suppress(OSError):
                (self.store.directory / OLD_STATE_FILE).unlink(missing_ok=True)
        self.watch.start()

    async def stop(self, withdraw: bool = True, keep: Collection[Reporter] = ()) -> list[bool]:
        """Stop watching and withdraw every container registration (bounded in time); per
        registration, whether that finished in time (nerve_stopped's withdrawn/failed).

        Both at once: a hung dockerd may hold the watch thread for seconds, and SIGTERM must
        not wait for it before withdrawing (nerve exits within 5 s)."""
        self._stopping = True  # container events arriving from now on are ignored
        await self.flags.stop()
        services = list(self.services.values())
        self.services.clear()
        await asyncio.gather(*(s.halt() for s in services), return_exceptions=True)
        watch = self.watch.stop(timeout=WITHDRAW_TIMEOUT) if self.watch else asyncio.sleep(0)
        steps = []
        if withdraw:
            # (``keep``: left for the next nerve by a restart stop, nerve/restart_stop.py)
            steps += [self._bounded(s.reporter.stop(withdraw=True)) for s in services
                      if s.reporter not in keep]  # fmt: skip
            await asyncio.gather(*(s.reporter.stop(withdraw=False) for s in services
                                   if s.reporter in keep))  # fmt: skip
            steps += [self._bounded(t) for t in self._retiring.values()]
        done, _ = await asyncio.gather(asyncio.gather(*steps), watch)
        return list(done)

    async def _bounded(self, aw: Any) -> bool:
        try:
            await asyncio.wait_for(aw, WITHDRAW_TIMEOUT)
        except Exception:  # sessions and leases expire by themselves
            return False
        return True

    # --- container changes ---------------------------------------------------------------

    def _on_change(self, containers: dict[str, ContainerInfo]) -> None:
        if self._stopping:
            return
        wanted = self._wanted(containers)
        self._apply(wanted)
        if self.watch is not None and self.watch.resyncs != self._resyncs:  # a full listing
            self._resyncs = self.watch.resyncs
            self.flags.resynced(containers)

    def _wanted(self, containers: dict[str, ContainerInfo]) -> dict[str, Wanted]:
        wanted: dict[str, Wanted] = {}
        for info in containers.values():
            if not (info.serving and selected(self.cfg, info, self.instance_id)):
                continue
            try:
                entries = wanted_for(self.cfg, self.instance_id, info)
            except LabelError as exc:
                self._label_error(info, str(exc))
                continue
            self._bad.pop(info.id, None)
            wanted.update((w.key, w) for w in entries)
        # A removed container's label error goes with it (/status must not keep every one
        # ever seen); one still there keeps it, so that it is not logged again.
        for gone in self._bad.keys() - containers.keys():
            del self._bad[gone]
        return wanted

    def _apply(self, wanted: dict[str, Wanted]) -> None:
        for key in [k for k in self.services if k not in wanted]:
            self._retire(key, "container stopped, unhealthy or gone")
        for key, entry in wanted.items():
            old = self.wanted.get(key)
            if key in self.services and old is not None:
                if old.config != entry.config:
                    self._retire(key, "address or labels changed")
                elif old.container_id != entry.container_id:  # recreated between listings:
                    self._retire(key, "another container under the name")  # its checks, flag
            if key not in self.services:
                self._add(entry)
        self.wanted = wanted

    def _label_error(self, info: ContainerInfo, reason: str) -> None:
        if self._bad.get(info.id) == reason:
            return
        self._bad[info.id] = reason
        self.label_errors.inc()
        event(log, "docker_labels_invalid", level=logging.WARNING, container=info.name,
              reason=reason)  # fmt: skip

    def _add(self, entry: Wanted) -> None:
        self.store.bind(entry.key, entry.container_id)  # (before its Service reads the flag)
        try:
            service = build_service(
                entry.key,
                entry.config,
                instance_id=entry.instance_id,
                registries=self.registries,
                metrics=self.metrics,
                store=self.store,
            )
        except Exception as exc:  # one bad container must not stop the others
            event(log, "docker_service_not_started", level=logging.ERROR, service=entry.key,
                  error=str(exc))  # fmt: skip
            return
        self.services[entry.key] = service
        event(log, "docker_service_added", service=entry.key, record=entry.instance_id,
              address=f"{entry.config.host}:{entry.config.port}")  # fmt: skip
        previous = self._retiring.get(entry.key)
        if previous is None:
            service.start()
        else:  # the old registration (same key) must be gone before the new one is written
            asyncio.get_running_loop().create_task(self._start_after(previous, service))

    async def _start_after(self, previous: asyncio.Task[None], service: Service) -> None:
        with contextlib.suppress(Exception):
            await previous
        if self.services.get(service.name) is service and not self._stopping:
            service.start()

    def _retire(self, key: str, reason: str) -> None:
        service = self.services.pop(key)
        self.store.unbind(key)
        event(log, "docker_service_removed", service=key, reason=reason)
        previous = self._retiring.get(key)

        async def retire() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await service.halt()
            await service.reporter.retire()
            await self.registries.release(service.reporter)

        task = asyncio.get_running_loop().create_task(retire(), name=f"docker-retire-{key}")
        self._retiring[key] = task
        task.add_done_callback(lambda t: self._retired(key, t))

    def _retired(self, key: str, task: asyncio.Task[None]) -> None:
        if self._retiring.get(key) is task:
            del self._retiring[key]
        self.metrics.forget_service(key)

    # --- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        watch = self.watch
        return {
            "engine": self.cfg.url,
            "connected": bool(watch and watch.connected),
            "error": watch.last_error if watch else None,
            "resyncs": watch.resyncs if watch else 0,
            "containers": len(watch.containers) if watch else 0,
            "invalid_labels": dict(self._bad),
            "services": {name: s.status() for name, s in sorted(self.services.items())},
        }


def docker_mode_config(config: NerveConfig) -> DockerModeConfig | None:
    """The `docker` block of a NerveConfig, when nerve runs in Docker mode."""
    return config.docker
