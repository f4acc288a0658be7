"""Docker watcher: the containers of one or more Docker engines become a service's servers.

Airbnb keys: ``servers`` (the engines: ``{name, host, port}`` for a TCP API, or a string such as
``unix:///var/run/docker.sock``), ``image_name`` (only containers of this image; the tag may be
left out) and ``container_port`` (the port inside the container). Ours: ``label_selector``
(``{label: value}``; an empty value or ``"*"`` only requires the label).

Unlike the Ruby watcher, which polled every ``check_interval`` (15 s), this one follows the
engines' event streams (smartstack.docker_events): a container that starts, dies, is stopped or
changes health reaches HAProxy at once, and every (re)connect to an engine resyncs the full list.
``check_interval`` sets how often the full list is read again anyway (default 60 s): an event
stream that died silently (a tcp:// engine behind a NAT) is mended there at the latest.
A container counts while it runs, is not being stopped and, if it has a HEALTHCHECK, is healthy.

Address of a container: its published binding of ``container_port`` (the binding's IP, or the
engine's host when bound to all addresses; 127.0.0.1 for a local socket); when the port is not
published, the container's own IP on its (first, by name) network, for a synapse that shares
that network.

At start nothing is reported before every engine has answered once, or STARTUP_HOLD passed:
the first report replaces the reconciler's fallback (the state file) for the whole service, so
reporting after the first engine alone would drop the containers of the others until they
answer. The hold stays under the reconciler's default ``startup_wait`` (3 s), which waits for
the first report anyway. Every report is complete: an engine still silent after the hold is
left out until it answers (its containers drop at a restart: capacity lost, never a wrong
server). Partial reports would make the reconciler hold every server the service had for
``state_file_ttl``, the answering engines' removed containers too (their IPs may serve another
service by then), and a SIGHUP's new watcher would never complete with an engine that never
answers.

``synapse_docker_engine_connected{service,engine}`` says which engine is followed;
``synapse_watcher_connected`` is 1 while any is (the service has a live source).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from smartstack.docker_events import (
    RESYNC_INTERVAL,
    ContainerInfo,
    ContainerWatch,
    docker_base_url,
    label_filters,
)
from smartstack.record import InvalidRecord, Registration
from synapse.discovery_config import ServerEntry
from synapse.model import Found
from synapse.watchers.base import Watcher

log = logging.getLogger("synapse.watchers.docker")

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:-]")
_ANY_ADDRESS = ("0.0.0.0", "::", "")
STARTUP_HOLD = 2.5  # seconds: at most this long for every engine's first answer


def engine_url(entry: ServerEntry) -> str:
    """The docker SDK URL of one ``servers`` entry."""
    if entry.port is not None:
        return docker_base_url(f"{entry.host}:{entry.port}")
    return docker_base_url(entry.host)


def engine_host(entry: ServerEntry) -> str:
    """The address consumers use for ports published on all interfaces of that engine."""
    url = engine_url(entry)
    if url.startswith("unix://"):
        return "127.0.0.1"
    return url.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")


def image_matches(image: str, wanted: str | None) -> bool:
    """``image_name`` with or without a tag/digest matches the container's image."""
    if not wanted:
        return True
    if image == wanted:
        return True
    repo = image.split("@", 1)[0]
    if ":" in repo.rsplit("/", 1)[-1]:
        repo = repo.rsplit(":", 1)[0]
    return repo == wanted


class DockerWatcher(Watcher):
    method = "docker"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._engines = list(self.discovery.servers or [])
        self._watches: list[ContainerWatch] = []
        self._reported_bad: set[str] = set()  # ids of present containers logged as bad
        self._holding = True  # at start, until every engine answered or STARTUP_HOLD passed

    async def run(self) -> None:
        self._holding = True
        labels = label_filters(self.discovery.label_selector)
        for entry in self._engines:
            watch = ContainerWatch(
                engine_url(entry),
                self.ctx.loop,
                lambda _containers: self._changed(),
                labels=labels,
                on_connection=lambda _ok, _err: self._connection_changed(),
                resync_interval=self.discovery.check_interval or RESYNC_INTERVAL,
            )
            self._watches.append(watch)
            self._engine_gauge(watch)  # 0 until it answers
            watch.start()
        await asyncio.sleep(STARTUP_HOLD)
        if self._holding:
            self._holding = False
            if any(w.resyncs for w in self._watches):  # (none: nothing known, nothing to say)
                self._report()
        await asyncio.Event().wait()  # the threads do the work; stop() cancels this

    async def close(self) -> None:
        for watch in self._watches:
            await watch.stop()
        self._watches.clear()

    def _engine_gauge(self, watch: ContainerWatch) -> None:
        gauge = self.metrics.docker_engine_connected.labels(self.service, watch.base_url)
        gauge.set(1 if watch.connected else 0)

    def _connection_changed(self) -> None:
        for watch in self._watches:
            self._engine_gauge(watch)
        errors = [w.last_error for w in self._watches if not w.connected and w.last_error]
        connected = any(w.connected for w in self._watches)
        self.set_connected(connected, "; ".join(errors) if errors else None)

    def _changed(self) -> None:
        self.count_event()
        if self._holding and all(w.resyncs for w in self._watches):
            self._holding = False
        if not self._holding:
            self._report()

    def _report(self) -> None:
        found: list[Found] = []
        skipped = 0
        present: set[str] = set()
        for entry, watch in zip(self._engines, self._watches, strict=False):
            present.update(watch.containers)
            for info in sorted(watch.containers.values(), key=lambda c: c.name):
                if not (info.serving and image_matches(info.image, self.discovery.image_name)):
                    continue
                try:
                    found.append(self._found(entry, info))
                except InvalidRecord as exc:
                    skipped += 1
                    if info.id not in self._reported_bad:
                        self._reported_bad.add(info.id)
                        self.bad_record(f"docker:{info.name}", exc.reason)
        self._reported_bad &= present  # a removed container's id is not kept forever
        # Complete, even while an engine is silent: a partial one holds all the service had.
        self.report(found, skipped, time.monotonic())

    def _found(self, entry: ServerEntry, info: ContainerInfo) -> Found:
        port = self.discovery.container_port or self.config.backend_port_override
        if port is None:
            raise InvalidRecord("no container_port (or backend_port_override) to connect to")
        binding = info.published(port)
        if binding is not None:
            host = engine_host(entry) if binding.host_ip in _ANY_ADDRESS else binding.host_ip
            address = (host, binding.host_port)
        elif info.networks:
            address = (info.networks[sorted(info.networks)[0]], port)
        else:
            raise InvalidRecord(f"port {port} is not published and the container has no IP")
        prefix = entry.name or engine_host(entry)
        name = _UNSAFE_NAME_CHARS.sub("_", f"{prefix}_{info.name}").lstrip("._:-")
        registration = Registration(host=address[0], port=address[1], name=name or info.id[:12])
        return Found(registration, f"docker:{info.name}")

    def status(self) -> dict:
        engines = [
            {
                "url": w.base_url,
                "connected": bool(w.connected),
                "containers": len(w.containers),
                "resyncs": w.resyncs,
                "error": w.last_error,
            }
            for w in self._watches
        ]
        return {**super().status(), "engines": engines}
