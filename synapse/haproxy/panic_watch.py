"""Runs the panic (``synapse.haproxy.panic``) of a managed HAProxy: told by the output relay
that a backend has no server available (or that a server of one in panic went DOWN), it
reads that backend's servers and sends what the panic's look decided, on a connection of
its own. Managed mode only: HAProxy's alert is read from its stderr, which a synapse that
adopted a running HAProxy (or one in its own container) does not have: for those the
backstop (``synapse.haproxy.panic_poll``, ``start``) pokes a backend found DOWN.

The commands touch only the check of servers that HAProxy has, so they go without the
controller's lock (a reload of seconds would hold the 503s as long); the planner leaves
the held servers' checks disabled (``Capabilities.held_checks``). A look at most every
MIN_GAP per backend: a flapping backend prints an alert per transition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.output_checks import Transition
from synapse.haproxy.panic import Held, Step, look, servers_of, status_name
from synapse.haproxy.panic_poll import poll
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError

if TYPE_CHECKING:
    from synapse.haproxy.managed import ManagedHAProxy
    from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy.panic")
MIN_GAP = 0.1  # seconds between looks at one backend
END_SLACK = 0.005  # seconds past a hold's end its look comes
RECHECK_S = 1.0  # a HANA status is looked at again after this (the zone checks' downinter)
RETRY_S = 1.0  # a look that failed (a reload, a slow socket) is tried again after this
LOOKS = 4  # looks at once: 200 backends poked together took 52 admin connections (refused)


@dataclass(frozen=True)
class PanicSettings:
    """A backend's ``health_check.panic`` and ``panic_hold_ms``."""

    enabled: bool
    hold_s: float


class PanicWatch:
    def __init__(
        self,
        path: str | None,
        settings_of: Callable[[str], PanicSettings | None],
        metrics: HAProxyMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = RuntimeClient(path) if path is not None else None  # (None: inert)
        self.held: dict[str, Held] = {}
        self._settings_of, self._metrics, self._clock = settings_of, metrics, clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # asked while its look ran: once more after it
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._looked: dict[str, float] = {}  # (clock) a backend's last look began
        self._slots = asyncio.Semaphore(LOOKS)  # (the admin socket's maxconn is 20)
        self._poll: asyncio.Task[None] | None = None  # the backstop (panic_poll)
        self.panics = 0  # started so far (tests, /status)

    def start(self) -> None:
        """Start the backstop that finds a backend DOWN without HAProxy's alert."""
        if self.client is not None and self._poll is None:
            self._poll = asyncio.get_running_loop().create_task(poll(self.client, self.poke))

    def offer(self, found: Transition) -> None:
        """A transition the output relay read: a backend without server, or a server of a
        backend in panic gone DOWN (``observe`` marks it while its check is disabled)."""
        if found.kind == "no_server":
            self.poke(found.key.removeprefix("backend "))
        elif found.kind == "check_down":
            backend = found.key.partition("/")[0]
            if backend in self.held:
                self.poke(backend)

    def poke(self, backend: str) -> None:
        """Look at ``backend`` soon: now, after its look under way, or MIN_GAP after its last."""
        if backend in self._tasks:
            self._again.add(backend)
            return
        wait = self._looked.get(backend, -MIN_GAP) + MIN_GAP - self._clock()
        if wait > 0:
            self._at(backend, wait)
            return
        self._looked[backend] = self._clock()
        self._tasks[backend] = asyncio.get_running_loop().create_task(self._run(backend))

    def held_checks(self) -> frozenset[str]:
        """The servers ("be/s") whose checks a panic holds disabled: the planner's to leave."""
        return frozenset(f"{b}/{s}" for b, held in self.held.items() for s in held.servers)

    def status(self) -> dict[str, Any]:
        now = self._clock()
        backends = {b: {"servers": sorted(h.servers), "for_s": round(h.until - now, 1)}
                    for b, h in sorted(self.held.items())}  # fmt: skip
        return {"panics": self.panics, "backends": backends}

    async def stop(self) -> None:
        """Cancel the looks (a stopping synapse; what is held stays: the next one's planner
        enables a held check, ``Capabilities.held_checks`` being empty there)."""
        if self._poll is not None:
            await cancel_and_wait(self._poll)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks.values()):
            await cancel_and_wait(task)

    def _at(self, backend: str, delay: float) -> None:
        timer = self._timers.pop(backend, None)
        if timer is not None:
            timer.cancel()
        self._timers[backend] = asyncio.get_running_loop().call_later(delay, self._due, backend)

    def _due(self, backend: str) -> None:
        self._timers.pop(backend, None)
        self.poke(backend)

    async def _run(self, backend: str) -> None:
        try:
            async with self._slots:
                await self._look(backend)
        except HAProxySocketError as err:  # (a reload, a restart: tried again, RETRY_S)
            event(log, "haproxy_panic_look_failed", level=logging.WARNING, backend=backend,
                  error=str(err)[:300])  # fmt: skip
            self._retry(backend, always=True)  # (HAProxy prints its alert once, not again)
        except Exception:  # must not end the relay's callbacks: logged, the next one tries
            log.exception("panic look at backend %s failed", backend)
            self._retry(backend, always=False)
        finally:
            self._tasks.pop(backend, None)
            if backend in self._again:
                self._again.discard(backend)
                self.poke(backend)

    def _retry(self, backend: str, always: bool) -> None:
        """After a failed look: again in RETRY_S (a hold must end: no check runs, no alert
        comes, and the planner leaves its checks disabled)."""
        if (always or backend in self.held) and backend not in self._timers:
            self._at(backend, RETRY_S)

    async def _look(self, backend: str) -> None:
        settings, held = self._settings_of(backend), self.held.get(backend)
        if self.client is None or (held is None and (settings is None or not settings.enabled)):
            return
        hold_s = settings.hold_s if settings is not None else 0.0
        (answer,) = await self.client.ask([f"show servers state {backend}"])
        rows = servers_of(answer, backend)  # (a backend gone: none, a hold of it ends)
        step = look(backend, rows, held, self._clock(), hold_s, RECHECK_S)
        if not step.commands:  # (why not: each server's state and last check)
            said = {n: f"{r.op_state}/{status_name(r.check_status)}/w{r.weight}"
                    for n, r in rows.items()}  # fmt: skip
            event(log, "haproxy_panic_look", level=logging.DEBUG, backend=backend, servers=said)
        failed = []
        if step.commands:  # (held first: an apply planning meanwhile leaves these checks off)
            self._hold(backend, step.held)
            answers = await self.client.ask(step.commands)
            said = zip(step.commands, answers, strict=False)
            failed = [f"{c}: {a.strip()}" for c, a in said if a.strip()]
            failed += [f"{c}: no answer" for c in step.commands[len(answers) :]]
        self._record(backend, held, step, failed)

    def _hold(self, backend: str, held: Held | None) -> None:
        if held is None:
            self.held.pop(backend, None)
        else:
            self.held[backend] = held

    def _record(self, backend: str, held: Held | None, step: Step, failed: list[str]) -> None:
        self._hold(backend, step.held)
        # (one timer a backend, the earliest: a look re-arms the hold's end; asyncio may
        # call a timer a little early, that look then arms it again)
        due = [t for t in (step.look_again, step.held and step.held.until + END_SLACK) if t]
        if due and backend not in self._timers:
            self._at(backend, max(0.0, min(due) - self._clock()))
        if step.started and held is None:
            self.panics += 1
            self._metrics.panics.inc()
            hold_s = round(step.held.until - step.held.since, 1) if step.held else 0
            event(log, "haproxy_panic_start", level=logging.WARNING, backend=backend,
                  servers=step.started, hold_s=hold_s)  # fmt: skip
        elif step.dropped or step.started:  # (not each raise: ~10 a second under overload)
            event(log, "haproxy_panic_kept", backend=backend, dropped=list(step.dropped),
                  joined=step.started)  # fmt: skip
        if held is not None and step.held is None:
            event(log, "haproxy_panic_end", backend=backend, enabled=list(step.ended),
                  held_s=round(self._clock() - held.since, 1), raised=held.raised)  # fmt: skip
        if failed:
            event(log, "haproxy_panic_command_failed", level=logging.WARNING, backend=backend,
                  failed=failed[:10])  # fmt: skip
        self._metrics.panic_servers.set(sum(len(h.servers) for h in self.held.values()))


class _ByBackend:
    """A backend's panic settings, from its service's ``health_check`` (a zone backend,
    ``<backend>_zone_<zone>``, its service's); the table is built again when the desired
    list is another one."""

    def __init__(self, desired: Callable[[], Sequence[DesiredService]]) -> None:
        self._desired = desired
        self._of: Sequence[DesiredService] | None = None
        self._table: dict[str, PanicSettings] = {}

    def __call__(self, backend: str) -> PanicSettings | None:
        services = self._desired()
        if services is not self._of:
            self._of, self._table = services, {}
            for service in services:
                check = service.config.haproxy.health_check
                self._table[service.backend_name] = PanicSettings(
                    check.panic, check.panic_hold_ms / 1000
                )
        found = self._table.get(backend)
        return found if found is not None else self._table.get(backend.rpartition("_zone_")[0])


def panic_watch(
    managed: ManagedHAProxy | None,
    metrics: HAProxyMetrics,
    desired: Callable[[], Sequence[DesiredService]],
) -> PanicWatch:
    """The panic of a managed HAProxy with an admin socket, told by its output relay (else
    one that is never told: nothing to hold)."""
    runtime = managed.runtime if managed is not None else None
    watch = PanicWatch(runtime and runtime.path, _ByBackend(desired), metrics)
    if managed is not None and runtime is not None:
        managed.on_check = watch.offer
    return watch
