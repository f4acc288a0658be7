"""Follow the containers of one Docker engine, event-driven, for nerve and synapse.

The docker SDK blocks, so one thread per engine does the I/O: it subscribes to the engine's
container events (and network connect/disconnect: a container's address), then lists (and
inspects) every matching container and hands the complete set to the event loop as a reset;
after that each event makes it re-inspect that one container and hand over the fresh state
(inspecting instead of trusting the event makes replays and out-of-order events harmless). When
the stream breaks (dockerd restarted, socket gone) it reports the disconnection, waits with
backoff and starts over with a full resync, so nothing is missed across a restart: it
resubscribes from the last event seen (dockerd replays what it buffered meanwhile), and what a
stop signal told it (a container in its grace period still runs, so the list cannot say) is
kept per container and StartedAt, until the container outlives the time a real stop would
have taken (then it survived the signal: ``stop_deadline``). Everything reaches the loop
through call_soon_threadsafe; the loop-side object keeps the current map and calls
`on_change(containers)` with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from smartstack.docker_signals import (
    FREEZING_SIGNALS,
    RESUMING_SIGNAL,
    is_stopping_kill,
    kill_signal,
    parse_signal,
    stop_deadline,
)
from smartstack.docker_stream import (
    event_time_ns,
    keep_alive,
    labels_match,
    sent_before_start,
    since_param,
    stream_socket,
)
from smartstack.logs import event

log = logging.getLogger("smartstack.docker")

RESYNC_INTERVAL = 60.0  # seconds between full resyncs of a connected engine

# Container events that can change what a consumer sees (exec_* events, one per healthcheck
# run, are left out on purpose). "health_status" matches "health_status: healthy" etc.
EVENTS = ("start", "restart", "die", "stop", "kill", "pause", "unpause", "destroy",
          "health_status", "rename", "update", "oom")  # fmt: skip
# Network events naming a container (Actor.Attributes.container): its address may have changed.
NETWORK_EVENTS = ("connect", "disconnect")


@dataclass(frozen=True)
class PortBinding:
    host_ip: str
    host_port: int


@dataclass(frozen=True)
class ContainerInfo:
    """What consumers need of one container, read from `docker inspect`."""

    id: str
    name: str
    image: str
    labels: dict[str, str] = field(hash=False)
    running: bool
    health: str | None  # "starting" | "healthy" | "unhealthy" | None (no HEALTHCHECK)
    started_at: str
    networks: dict[str, str] = field(hash=False)  # network name -> IPv4 address
    ports: dict[str, tuple[PortBinding, ...]] = field(hash=False)  # "80/tcp" -> bindings
    stopping: bool = False  # a stop signal was sent: withdraw before it dies
    stop_signal: int | None = None  # its Config.StopSignal (None: Docker's default, TERM)
    stop_timeout: int | None = None  # its Config.StopTimeout (None: Docker's default, 10 s)
    health_held: bool = False  # "healthy" kept across a dockerd restart (restored_health)

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any], stopping: bool = False) -> ContainerInfo:
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        settings = attrs.get("NetworkSettings") or {}
        ports: dict[str, tuple[PortBinding, ...]] = {}
        for key, bindings in (settings.get("Ports") or {}).items():
            ports[key] = tuple(
                PortBinding(b.get("HostIp") or "0.0.0.0", int(b["HostPort"]))
                for b in bindings or ()
                if str(b.get("HostPort", "")).isdigit()
            )
        networks = {
            name: net["IPAddress"]
            for name, net in (settings.get("Networks") or {}).items()
            if net and net.get("IPAddress")
        }
        return cls(
            id=attrs["Id"],
            name=str(attrs.get("Name", "")).lstrip("/"),
            image=str(config.get("Image", "")),
            labels=dict(config.get("Labels") or {}),
            # (a restart policy's container between runs says Running and Restarting)
            running=bool(state.get("Running"))
            and not state.get("Paused")
            and not state.get("Restarting"),
            health=(state.get("Health") or {}).get("Status"),
            started_at=str(state.get("StartedAt", "")),
            networks=networks,
            ports=ports,
            stopping=stopping,
            stop_signal=parse_signal(config.get("StopSignal")),
            stop_timeout=timeout if isinstance(timeout := config.get("StopTimeout"), int) else None,
        )

    @property
    def serving(self) -> bool:
        """Running, not being stopped, and healthy if it has a HEALTHCHECK."""
        return self.running and not self.stopping and self.health in (None, "healthy")

    def published(self, container_port: int, proto: str = "tcp") -> PortBinding | None:
        """The first IPv4 host binding of a container port, if it is published."""
        for binding in self.ports.get(f"{container_port}/{proto}", ()):
            if ":" not in binding.host_ip:
                return binding
        return None


def docker_base_url(server: str) -> str:
    """'unix:///x.sock', '/x.sock', 'tcp://h:2375', 'h:2375' -> a docker SDK base_url."""
    if server.startswith(("unix://", "tcp://", "http://", "https://")):
        return server
    if server.startswith("/"):
        return f"unix://{server}"
    return f"tcp://{server}"


def label_filters(selector: dict[str, str] | None, required: Iterable[str] = ()) -> list[str]:
    """Docker label filters: `required` names, plus a selector where "" or "*" means any value."""
    out = list(required)
    for key, value in (selector or {}).items():
        out.append(key if value in ("", "*") else f"{key}={value}")
    return out


def restored_health(previous: ContainerInfo | None, fresh: ContainerInfo) -> ContainerInfo:
    """`fresh`, with the health verdict of `previous` kept when dockerd only restarted.

    A dockerd restarted with live-restore resets the health of the containers it restores to
    "starting" (moby's initHealthMonitor) although they never stopped: withdrawing them until
    the next probe (30 s by default) would retire healthy services everywhere. The same
    container (same id and StartedAt) that was healthy stays so until Docker reports a result
    (healthy, or unhealthy after its usual retries); a container that really restarted has
    another StartedAt and starts as not serving, as always."""
    if (
        previous is not None
        and previous.health == "healthy"
        and fresh.health == "starting"
        and previous.id == fresh.id
        and bool(fresh.started_at)
        and previous.started_at == fresh.started_at
    ):
        return replace(fresh, health="healthy", health_held=True)
    return fresh


class ContainerWatch:
    """The containers of one engine that carry all of `labels` (names or name=value)."""

    def __init__(
        self,
        base_url: str,
        loop: asyncio.AbstractEventLoop,
        on_change: Callable[[dict[str, ContainerInfo]], None],
        *,
        labels: Iterable[str] = (),
        on_connection: Callable[[bool, str | None], None] | None = None,
        on_gone: Callable[[str], None] | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        timeout: float = 10.0,
        resync_interval: float = RESYNC_INTERVAL,
    ) -> None:
        self.base_url = base_url
        self.loop = loop
        self.on_change = on_change
        self.on_connection = on_connection
        self.on_gone = on_gone  # a container of ours was destroyed (its id), stopped or not
        self.labels = list(labels)
        self.backoff = backoff
        self.timeout = timeout
        self.resync_interval = resync_interval
        self.containers: dict[str, ContainerInfo] = {}
        self.connected: bool | None = None  # unknown at first: the first failure is logged
        self.last_error: str | None = None
        self.resyncs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stream: Any = None
        self._client: Any = None
        self._resync_due = threading.Event()  # our timer ended the stream: resync at once
        # Thread-side, container id -> its StartedAt when a stop signal was seen (and, frozen:
        # it was STOP/TSTP, CONT brings it back). Kept across reconnects: a resync lists a
        # container in its stop grace period as running; only start/restart/unpause, destroy,
        # another StartedAt (it ran again meanwhile) or, not frozen, still running past its
        # stop deadline (it survived the signal: a handler, a PID 1 without one) ends the flag.
        self._stopping_ids: dict[str, str] = {}
        self._frozen_ids: dict[str, str] = {}
        # stopping id -> its stop deadline on the monotonic clock: a wall-clock step (NTP)
        # during the grace neither ends the flag at once nor stretches it.
        self._deadlines: dict[str, float] = {}
        self.clock: Callable[[], float] = time.time  # (compared with dockerd's event times)
        self.monotonic: Callable[[], float] = time.monotonic
        self._last_event_ns: int | None = None  # resubscribe from there: replays missed kills
        self._tracked: set[str] = set()  # thread-side: the matching containers inspected

    # ------------------------------------------------------------------ loop side

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"docker-events {self.base_url}", daemon=True
        )
        self._thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._close_stream()
        if self._thread is not None:
            await self.loop.run_in_executor(None, self._thread.join, timeout)
            self._thread = None

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if self._stop.is_set():
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            self.loop.call_soon_threadsafe(fn, *args)

    def _apply_reset(self, containers: dict[str, ContainerInfo], periodic: bool = False) -> None:
        # (the map from before a disconnection is still here: restored_health compares)
        previous = self.containers
        self.containers = {cid: self._with_previous(info) for cid, info in containers.items()}
        if periodic:  # the stream should have told us: a difference means it missed events
            changed = [info.name for cid, info in {**previous, **self.containers}.items()
                       if previous.get(cid) != self.containers.get(cid)]  # fmt: skip
            if changed:
                event(log, "docker_resync_corrected", level=logging.WARNING,
                      engine=self.base_url, containers=",".join(sorted(changed)[:20]))  # fmt: skip
        self.resyncs += 1
        self._set_connected(True, None)
        self.on_change(dict(self.containers))

    def _apply_update(self, container_id: str, info: ContainerInfo | None) -> None:
        if info is None:
            if self.on_gone is not None:  # (a stopped one left the map at a resync)
                self.on_gone(container_id)
            if self.containers.pop(container_id, None) is None:
                return
        else:
            info = self._with_previous(info)
            if self.containers.get(container_id) == info:
                return
            self.containers[container_id] = info
        self.on_change(dict(self.containers))

    def _with_previous(self, info: ContainerInfo) -> ContainerInfo:
        previous = self.containers.get(info.id)
        info = restored_health(previous, info)
        if info.health_held and not (previous is not None and previous.health_held):
            event(log, "docker_health_kept", engine=self.base_url, container=info.name)
        return info

    def _set_connected(self, connected: bool, error: str | None) -> None:
        changed = connected != self.connected
        self.connected = connected
        self.last_error = error
        if changed:
            event(log, "docker_connected" if connected else "docker_disconnected",
                  level=logging.INFO if connected else logging.WARNING,
                  engine=self.base_url, error=error)  # fmt: skip
        if self.on_connection is not None:
            self.on_connection(connected, error)

    # ------------------------------------------------------------------ thread side

    def _run(self) -> None:
        delay = self.backoff[0]
        periodic = False
        while not self._stop.is_set():
            try:
                self._session(periodic)
                error = "event stream ended"  # dockerd went away or restarted
                delay = self.backoff[0]
            except Exception as exc:  # any failure means: reconnect and resync
                error = f"{type(exc).__name__}: {exc}"[:300]
                delay = min(delay * 2, self.backoff[1])
            finally:
                self._close_stream()
            if self._stop.is_set():
                break
            periodic = self._resync_due.is_set()
            if periodic:  # not a disconnection: reconnect and relist at once
                self._resync_due.clear()
                delay = self.backoff[0]
                continue
            self._post(self._set_connected, False, error)
            self._stop.wait(random.uniform(delay / 2, delay))

    def _session(self, periodic: bool = False) -> None:
        import docker

        client = docker.DockerClient(base_url=self.base_url, version="auto", timeout=self.timeout)
        with self._lock:
            self._client = client
        # No label filter here: dockerd would apply it to a network event's labels (the
        # network's) and drop every connect/disconnect. Container events are matched on the
        # labels they carry (_handle), network events on the container they name.
        filters = {"type": ["container", "network"], "event": [*EVENTS, *NETWORK_EVENTS]}
        # Subscribe before listing: whatever happens in between arrives as an event; with
        # `since`, so do the events dockerd still buffers from while we were disconnected.
        since = None if self._last_event_ns is None else since_param(self._last_event_ns)
        stream = client.api.events(decode=True, filters=filters, since=since)
        keep_alive(stream_socket(stream))
        with self._lock:
            self._stream = stream
        if self._stop.is_set():
            return
        # Running (and paused) ones only: a stopped container never counts.
        label_filter = {"label": self.labels} if self.labels else None
        listed = client.api.containers(filters=label_filter)
        snapshot = {}
        for summary in listed:
            info = self._inspect(client, summary["Id"])
            if info is not None:
                snapshot[info.id] = info
        self._tracked = set(snapshot)
        for gone in [cid for cid in self._stopping_ids if cid not in snapshot]:
            self._unflag(gone)  # not running: not needed again
        self._post(self._apply_reset, snapshot, periodic)
        # Every resync_interval the stream is ended and the list read again: a stream that
        # died silently (tcp://, nothing received, nothing to notice) is mended there.
        timer = threading.Timer(self.resync_interval, self._end_for_resync)
        timer.daemon = True
        timer.start()
        try:
            for message in stream:
                if self._stop.is_set():
                    return
                self._handle(client, message)
        finally:
            timer.cancel()

    def _end_for_resync(self) -> None:
        self._resync_due.set()
        self._close_stream()

    def _handle(self, client: Any, message: dict[str, Any]) -> None:
        self._last_event_ns = event_time_ns(message) or self._last_event_ns
        actor = message.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        action = str(message.get("Action") or message.get("status") or "")
        if message.get("Type") == "network":
            self._network_event(client, action, attributes.get("container"))
            return
        container_id = message.get("id") or actor.get("ID")
        if not container_id:
            return
        if container_id not in self._tracked and not labels_match(attributes, self.labels):
            return  # another container of the engine
        sent = kill_signal(message)
        thawed = sent == RESUMING_SIGNAL and container_id in self._frozen_ids
        if action in ("start", "restart", "unpause", "destroy") or thawed:
            self._unflag(container_id)
        if action == "destroy":
            self._tracked.discard(container_id)
            self._post(self._apply_update, container_id, None)
            return
        info = self._inspect(client, container_id)
        # Inspected first: whether the signal stops it depends on the container's stop signal,
        # and a kill sent before its current start (a replay) was for an earlier run.
        # (A replayed kill of this run that the container has outlived withdraws nothing.)
        sent_ns = event_time_ns(message)
        timeout = info.stop_timeout if info is not None else None
        now = self.clock()
        deadline = stop_deadline(sent_ns / 1e9 if sent_ns else now, timeout)
        if (
            info is not None
            and is_stopping_kill(message, info.stop_signal)
            and not sent_before_start(message, info.started_at)
            and (sent in FREEZING_SIGNALS or now < deadline)
        ):
            self._stopping_ids[container_id] = info.started_at
            self._deadlines[container_id] = self.monotonic() + (deadline - now)
            if sent in FREEZING_SIGNALS:
                self._frozen_ids[container_id] = info.started_at
            info = replace(info, stopping=True)
        self._post(self._apply_update, container_id, info)

    def _unflag(self, container_id: str) -> None:
        for flags in (self._stopping_ids, self._frozen_ids, self._deadlines):
            flags.pop(container_id, None)

    def _network_event(self, client: Any, action: str, container_id: Any) -> None:
        """A container joined or left a network: re-inspect it if it is one of ours."""
        if action not in NETWORK_EVENTS or not isinstance(container_id, str) or not container_id:
            return
        known = container_id in self._tracked
        info = self._inspect(client, container_id)
        if info is not None or known:
            self._post(self._apply_update, container_id, info)

    def _inspect(self, client: Any, container_id: str) -> ContainerInfo | None:
        """The container's state; None when it is gone or does not carry our labels."""
        import docker.errors

        try:
            attrs = client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            self._tracked.discard(container_id)
            return None
        if not labels_match((attrs.get("Config") or {}).get("Labels") or {}, self.labels):
            self._tracked.discard(container_id)
            return None
        self._tracked.add(container_id)
        started_at = str((attrs.get("State") or {}).get("StartedAt", ""))
        if self._stopping_ids.get(container_id, started_at) != started_at:  # it ran again since
            self._unflag(container_id)
        info = ContainerInfo.from_inspect(attrs, container_id in self._stopping_ids)
        if (
            info.stopping
            and info.running
            and container_id not in self._frozen_ids
            and self.monotonic() > self._deadlines.get(container_id, float("inf"))
        ):  # a real stop would have killed it by now: it survived the signal
            self._unflag(container_id)
            event(log, "docker_stop_outlived", level=logging.WARNING, engine=self.base_url,
                  container=info.name)  # fmt: skip
            info = replace(info, stopping=False)
        return info

    def _close_stream(self) -> None:
        with self._lock:
            stream, client = self._stream, self._client
            self._stream = self._client = None
        for closer in (getattr(stream, "close", None), getattr(client, "close", None)):
            if closer is not None:
                with contextlib.suppress(Exception):
                    closer()
