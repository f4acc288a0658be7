"""Zero-config Docker edge (issue 13): services made from container labels alone.

With ``docker_services: {enabled: true}`` synapse follows one Docker engine's containers
that carry ``smartstack.service`` (the prefix is ``label_prefix``). Each service named by a
running container becomes a service of synapse's config, as if written in the file:

- discovery: the ``docker`` watcher on that engine, ``label_selector`` on the service's
  label and its ``smartstack.port`` label as written (so a container refused here, its port
  label differing or malformed, is not served either), ``container_port`` from that label
  (its first port when nerve's list);
- ``haproxy.routes``: the union of its running containers' ``smartstack.hosts`` and
  ``smartstack.paths`` (comma separated) on the shared frontend.

``smartstack.tls`` is accepted (``true``/``false``): TLS is terminated on the shared
frontend for every route once ``haproxy.tls`` is set, so it changes nothing by itself.

A service named in the file wins over a container's of the same name (logged). Changes go
through the daemon's ``apply_config`` like a SIGHUP: a new host of an existing service is a
route change (no reload); a new service starts its watcher and costs one reload.

A service whose last container went away is kept for KEEP_GONE_S (its backend empty) before
it is removed: a container recreated (stopped, then run again) keeps its service, and its
watcher adds the new container at runtime.

The services are saved beside the state file (synapse.docker_services_saved): a restarted
synapse starts with them, so its first apply keeps them in the adopted HAProxy whether or
not dockerd answers. Without a saved file the start waits for Docker's first answer, up to
``startup_wait``, unless the engine cannot be reached (nothing to wait for). Docker's
answers replace them, applied once the daemon has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smartstack.docker_events import ContainerInfo, ContainerWatch, docker_base_url
from smartstack.logs import event
from synapse.config import ServiceConfig, SynapseConfig
from synapse.docker_services_saved import SavedBlocks
from synapse.edge_config import DockerServicesConfig
from synapse.haproxy.routes import RouteCollision, RouteSpec, compile_routes

log = logging.getLogger("synapse.docker_services")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# How long a service outlives its last container. `docker compose up` recreating a
# one-container service stops the old one before it runs the new one: the service removed,
# then added back, cost two reloads, the second held by restart_interval, and the new
# container served 1.4-2.0 s after it ran, every request failing meanwhile (review s37).
KEEP_GONE_S = 10.0


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def service_blocks(
    containers: Iterable[ContainerInfo], config: DockerServicesConfig
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Running containers' labels -> service blocks (service name -> config document), and
    the problems found (a container whose labels cannot make a service, named)."""
    prefix = config.label_prefix
    found: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for info in sorted(containers, key=lambda c: c.name):
        labels = info.labels
        name = labels.get(f"{prefix}service", "")
        if not info.running or not name:
            continue
        where = f"container {info.name}"
        port_label = labels.get(f"{prefix}port", "")
        port = next(iter(_split(port_label)), "")  # nerve allows "80,81"
        if not _NAME.fullmatch(name):
            problems.append(f"{where}: {prefix}service {name!r} is not a service name")
            continue
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"{where}: {prefix}port {port!r} must be the container's port")
            continue
        entry = found.setdefault(
            name, {"port": int(port), "label": port_label, "hosts": set(), "paths": set()}
        )
        if entry["label"] != port_label:  # the watcher selects on the label as written
            problems.append(f"{where}: {prefix}port {port_label} differs from {entry['label']}")
            continue
        entry["hosts"].update(host.lower() for host in _split(labels.get(f"{prefix}hosts")))
        entry["paths"].update(_split(labels.get(f"{prefix}paths")))
    blocks = {}
    for name, entry in found.items():
        routes = {"hosts": sorted(entry["hosts"]), "paths": sorted(entry["paths"])}
        blocks[name] = {
            "discovery": {
                "method": "docker",
                "servers": [config.engine],
                "label_selector": {f"{prefix}service": name, f"{prefix}port": entry["label"]},
                "container_port": entry["port"],
            },
            "haproxy": {"routes": routes} if routes["hosts"] or routes["paths"] else {},
        }
    return blocks, problems


class DockerServiceSource:
    """Follows the engine; ``merge`` adds its services to a config from the file."""

    def __init__(
        self,
        config: DockerServicesConfig,
        loop: asyncio.AbstractEventLoop,
        apply: Callable[[], Awaitable[None]],
        saved: Path | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self._apply = apply  # the daemon applies its file config again (merged)
        self.services: dict[str, ServiceConfig] = {}
        self._logged: set[str] = set()  # the containers' problems of the last change
        # The services merge refused (a name or route of the file's): said once, until the
        # clash ends; a container change does not say them again (each merge recomputes).
        self._refused: set[str] = set()
        self._watch: ContainerWatch | None = None
        self._task: asyncio.Task[None] | None = None
        self._saved = SavedBlocks(saved, config)
        self._writing: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()  # Docker answered, or could not be reached
        self._live = False  # changes are applied (the daemon has started with a merged config)
        self._merged: dict[str, ServiceConfig] = {}  # the services the last merge saw
        self._containers: dict[str, ContainerInfo] = {}  # the last listing
        self._gone: dict[str, float] = {}  # kept services: when their last container went
        self._listed: set[str] = set()  # the services of the last listing's containers
        self._recheck: asyncio.TimerHandle | None = None  # (the end of the oldest keep)
        self.clock: Callable[[], float] = time.monotonic

    async def begin(self, wait: float) -> None:
        """Follow the engine, starting from the previous run's services; none saved: from
        its first answer, waited for up to ``wait`` seconds. An engine that cannot be
        reached (its first connection fails) ends the wait at once: waiting would only
        delay every other service, and its containers come when it answers."""
        self.services = self._saved.load()
        self.start()
        if not self.services:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), wait)

    def go_live(self) -> None:
        """The daemon runs a merged config: apply changes from now on (one that came
        since the merge at once)."""
        self._live = True
        if self.services != self._merged:
            self._schedule_apply()

    def start(self) -> None:
        self._watch = ContainerWatch(
            docker_base_url(self.config.engine),
            self.loop,
            self._changed,
            labels=[f"{self.config.label_prefix}service"],
            on_connection=self._connection,
        )
        self._watch.start()

    def _connection(self, connected: bool, error: str | None) -> None:
        if not connected:  # an attempt failed (no socket, refused); a slow dockerd has not
            self._answered.set()

    async def stop(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        if self._recheck is not None:  # (after the watch: its last listing may arm one)
            self._recheck.cancel()
        for task in (self._task, self._writing):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    def _changed(self, containers: dict[str, ContainerInfo]) -> None:
        self._containers = containers
        blocks, problems = service_blocks(containers.values(), self.config)
        services: dict[str, ServiceConfig] = {}
        for name, block in blocks.items():
            try:
                services[name] = ServiceConfig.model_validate(block)
            except ValidationError as err:
                problems.append(f"service {name}: {err.errors()[0]['msg']}")
        for problem in problems:
            if problem not in self._logged:
                event(log, "docker_service_refused", level=logging.WARNING, problem=problem)
        self._logged = set(problems)
        self._answered.set()
        text = self._saved.text({name: blocks[name] for name in services})
        if text is not None:  # (in a thread: it fsyncs; in order)
            self._writing = self.loop.create_task(self._write_after(self._writing, text))
        leaving = set(self._gone)
        services = self._keep_gone(services)
        # (a service now leaving yields its routes: a refused one may fit, merge again)
        freed = bool(self._refused) and not set(self._gone) <= leaving
        if services != self.services or freed:
            self.services = services
            if self._live:
                self._schedule_apply()

    def _keep_gone(self, services: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        """``services`` plus those whose last container went less than KEEP_GONE_S ago
        (once live, and listed by Docker before: a saved one Docker's first answer lacks
        goes at once); a recheck at the first end."""
        now, kept = self.clock(), dict(services)
        gone = {}
        for name, service in self.services.items() if self._live else ():
            since = self._gone.get(name, now if name in self._listed else None)
            if name not in services and since is not None and now - since < KEEP_GONE_S:
                kept[name], gone[name] = service, since
        self._gone, self._listed = gone, set(services)
        if self._recheck is not None:
            self._recheck.cancel()
        if gone:
            left = KEEP_GONE_S - (now - min(gone.values()))
            self._recheck = self.loop.call_later(left, lambda: self._changed(self._containers))
        return kept

    def _schedule_apply(self) -> None:
        self._task = self.loop.create_task(self._apply_after(self._task))

    async def _write_after(self, previous: asyncio.Task[None] | None, text: str) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        await asyncio.to_thread(self._saved.write, text)

    async def _apply_after(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self._apply()
        except Exception as exc:  # logged; the next change tries again
            event(log, "docker_services_failed", level=logging.ERROR, error=str(exc)[:500])

    def merge(self, config: SynapseConfig) -> SynapseConfig:
        """``config`` (from the file) plus the containers' services that fit: a name the
        file uses, or a route another service has, leaves a container's service out."""
        self._merged = dict(self.services)
        services = dict(config.services)
        refused: set[str] = set()
        routed = {
            name: RouteSpec(name, svc.haproxy.routes.hosts, svc.haproxy.routes.paths)
            for name, svc in services.items()
            if svc.haproxy.routes
        }
        # A service kept after its last container (KEEP_GONE_S) is leaving: it comes after
        # the others and yields its routes, unsaid. First by name, a kept `web` held its route
        # from a new `web2` (a rename, a blue/green cutover) for 10 s: 412 requests failed
        # at ~40 req/s, served 10.25 s after the old container stopped, against 1.0 s
        # (review s37 cr, rename_real.py).
        leaving = self._gone
        for name, service in sorted(self.services.items(), key=lambda i: (i[0] in leaving, i[0])):
            if name in services:
                if name not in leaving:
                    self._refuse(refused, name, "the config file has a service of that name")
                continue
            hap = service.haproxy
            mine = {name: RouteSpec(name, hap.routes.hosts, hap.routes.paths)} if hap.routes else {}
            try:
                compile_routes({**routed, **mine})
            except RouteCollision as err:
                if name not in leaving:
                    self._refuse(refused, name, str(err))
                continue
            routed.update(mine)
            services[name] = service
        self._refused = refused
        return config.model_copy(update={"services": services})

    def _refuse(self, refused: set[str], name: str, why: str) -> None:
        problem = f"{name}: {why}"
        refused.add(problem)
        if problem not in self._refused:
            event(log, "docker_service_refused", level=logging.WARNING, problem=problem)
