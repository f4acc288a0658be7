"""Per-service isolation (edge, issue 13): one service's bad line must not block the others.

When the candidate config fails ``haproxy -c``, HAProxy names where: ``[file:line]`` in
its ALERT lines, sometimes a proxy (``backend 'x'``). ``culprits`` maps those to the
services whose sections hold them: a line of ``frontend <service>`` or ``backend
<backend_name>``, or a line of the shared frontend that a service's own
``shared_frontend`` lines brought. Those services are isolated: until their config block
changes, they are rendered with their last good block (the one in the last config HAProxy
accepted; a service that never had one is left out) and their servers still follow
discovery at runtime. A new synapse process has none in memory: a service HAProxy runs
gets its block read back from the config file it runs (``seeding``), so a restart with a
refused block does not take it out of HAProxy. Everyone else's change is applied: the
controller renders again and validates once more. An error that names no service
(``global``, ``defaults``, the operator's shared frontend lines) refuses the whole
candidate as before.

Isolated services show on ``/status`` (``isolated_services``), on the status page and as
``synapse_service_config_isolated{service}`` (1 while isolated).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge

from smartstack.logs import event
from synapse.atomic import read_text
from synapse.config import HAProxyConfig, ServiceConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.ports import NOT_HERE, PORT_RECHECK_S, waits
from synapse.haproxy.seeding import SHARED_FRONTEND, seed_block
from synapse.haproxy.settings import Settings
from synapse.identity import moved
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")

_WHERE = re.compile(r"\[([^\]\s:]+):(\d+)\]")
_PROXY = re.compile(r"\b(?:backend|frontend|proxy|listen) '([^']+)'")
_PROXY_KINDS = ("frontend", "backend", "listen")
FROM_FILE = "last good config (from the running config file)"


class RunningFile(Protocol):  # synapse.haproxy.configfile.ConfigFile
    path: Path

    @property
    def parsed(self) -> ParsedConfig | None: ...


# The ``haproxy`` block and the config file HAProxy runs (None: synapse does not write it).
RunningSource = Callable[[], tuple[HAProxyConfig, RunningFile | None]]


def sections_by_line(text: str) -> list[tuple[str, str]]:
    """Per line of ``text`` (index = line number - 1): (section header, the line stripped)."""
    out = []
    header = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            header = " ".join(line.split())
        out.append((header, line.strip()))
    return out


def culprits(error: str, candidate: str, text: str, services: Iterable[DesiredService]) -> set[str]:
    """The services whose sections of ``text`` (the candidate at path ``candidate``) hold
    the errors ``haproxy -c`` reported."""
    services = list(services)
    by_proxy: dict[str, set[str]] = {}
    for service in services:
        by_proxy.setdefault(service.name, set()).add(service.name)
        by_proxy.setdefault(service.backend_name, set()).add(service.name)
    lines = sections_by_line(text)
    found: set[str] = set()
    for path, number in _WHERE.findall(error):
        if Path(path).name != Path(candidate).name or not 0 < int(number) <= len(lines):
            continue
        header, line = lines[int(number) - 1]
        kind, _, proxy = header.partition(" ")
        if kind not in _PROXY_KINDS:
            continue
        if proxy == SHARED_FRONTEND and proxy not in by_proxy:
            found |= {s.name for s in services if line in s.config.haproxy.shared_frontend}
        else:
            found |= by_proxy.get(proxy, set())
    for proxy in _PROXY.findall(error):
        found |= by_proxy.get(proxy, set())
    return found


@dataclass
class Isolated:
    bad: ServiceConfig  # the refused block: isolated until the service's block changes
    error: str
    since: float

    @property
    def taken(self) -> bool:
        """Left out for a port another process listens on or an address this host does not
        have (``port_taken``), not a bad line."""
        return waits(self.error)


class Isolation:
    def __init__(self, registry: CollectorRegistry, running: RunningSource | None = None) -> None:
        self.gauge = Gauge(
            "synapse_service_config_isolated",
            "1 while a service's config block is refused by haproxy -c and its last good "
            "block runs instead (per-service isolation)",
            ["service"],
            registry=registry,
        )
        self.isolated: dict[str, Isolated] = {}
        self._good: dict[str, ServiceConfig] = {}  # last block HAProxy accepted, per service
        self._running = running  # where a block HAProxy runs is read back from (``seeding``)
        self._seeded: dict[str, str] = {}  # their _good was read back from this file
        self._lost: dict[str, str] = {}  # HAProxy ran them, their block could not be kept: why
        self._stand_ins: dict[str, tuple[DesiredService, DesiredService]] = {}
        self._settled: list[DesiredService] = []  # the input of the last ``settled``
        self.given: list[DesiredService] = []  # the last whole input (``port_taken`` retries)

    def substitute(
        self, desired: list[DesiredService], complete: bool = True
    ) -> list[DesiredService]:
        """``desired`` with isolated services on their last good block (left out when they
        have none); an isolated service whose block changed is tried again. ``complete``:
        ``desired`` is the whole input (an isolated service missing from it is gone)."""
        if complete:
            self.given = desired
        if not self.isolated:
            return desired  # the usual case: no loop over every service per apply
        if complete:
            names = {service.name for service in desired}
            for name in [n for n in self.isolated if n not in names]:
                self._clear(name, "the service is gone", gone=True)
        out = []
        for service in desired:
            iso = self.isolated.get(service.name)
            if iso is None:
                out.append(service)
                continue
            memo = self._stand_ins.get(service.name)
            if memo is not None and service is memo[1]:
                service = memo[0]  # (its stand-in: the service as given, itself isolated)
            if service.config is not iso.bad and service.config != iso.bad:
                self._clear(service.name, "its config changed: tried again")
                out.append(service)
            elif service.name in self._good:
                out.append(self._stand_in(service))
        return out

    async def apply(
        self,
        apply_with: Callable[[list[DesiredService]], Awaitable[ApplyResult]],
        desired: list[DesiredService],
        settings: Settings,
    ) -> ApplyResult:
        """One apply of ``desired``; when its candidate is refused, again without the
        services the refusal names (at most once per service)."""
        result = first = await apply_with(desired)
        while self.isolate(result, settings.candidate_path, desired):
            desired = self.substitute(desired, complete=False)
            result = await apply_with(desired)
        result = self.outcome(first, result)
        self.settled(desired, result)
        return result

    def _stand_in(self, service: DesiredService) -> DesiredService:
        """The service with its last good block and today's servers (one object per
        input object: the renderer reuses a piece while its DesiredService is the same)."""
        memo = self._stand_ins.get(service.name)
        if memo is not None and memo[0] is service:
            return memo[1]
        # replace(), not a new DesiredService: the zones (frontend lines, map) come along
        stand_in = replace(service, config=self._good[service.name])
        self._stand_ins[service.name] = (service, stand_in)
        return stand_in

    def isolate(
        self, result: ApplyResult, candidate: Path | None, desired: list[DesiredService]
    ) -> bool:
        """After a refused candidate: isolate the services it names; False when there is
        nobody new to isolate (the refusal stands)."""
        if result.reload is not ApplyOutcome.INVALID or not result.error or candidate is None:
            return False
        text = read_text(candidate)
        if text is None:
            return False
        found = culprits(result.error, str(candidate), text, desired)
        # A block read back from the running file and refused too: left out, as before.
        dropped = self._unseed(found & set(self.isolated) & self._seeded.keys())
        names = found - set(self.isolated)
        by_name = {service.name: service for service in desired}
        for name in sorted(names):
            detail = [line for line in result.error.splitlines() if line.strip()]
            if waits(result.error):  # (one line per port: this service's)
                detail = [x for x in detail if name in culprits(x, str(candidate), text, desired)]
            detail = detail[:3]
            self.isolated[name] = Isolated(by_name[name].config, "\n".join(detail), time.time())
            self._settled = []
            self.gauge.labels(name).set(1)
            if name not in self._good:
                self._seed(by_name[name])
            event(log, "haproxy_service_isolated", level=logging.ERROR, service=name,
                  error=detail[0][:300] if detail else "", detail=self._kept(name))  # fmt: skip
        return bool(names) or dropped

    def _kept(self, name: str) -> str:
        if name in self._seeded:
            return "its last good config, from the running config file"
        if name in self._good:
            return "its last good config"
        if name in self._lost:
            return "left out (its running block cannot be kept)"
        return f"left out ({self._waits_for(name)})" if self.isolated[name].taken else \
            "left out (never valid)"  # fmt: skip

    def _waits_for(self, name: str) -> str:
        if NOT_HERE in self.isolated[name].error:
            return "its bind address is not on this host"
        return "its frontend port is taken"

    def _seed(self, service: DesiredService) -> None:
        """An isolated service without a last good block: the block HAProxy runs, read
        back from the config file (``seeding``), when it has one."""
        config, file = self._running() if self._running is not None else (None, None)
        running = file.parsed if file is not None else None
        if config is None or file is None or running is None:
            return  # (no file: synapse does not write it, or it has none yet)
        seed = seed_block(service, config, running)
        if seed.config is not None:
            self._good[service.name], self._seeded[service.name] = seed.config, str(file.path)
            # (added: the lines this version's render adds to the running backend, e.g.
            # `timeout queue` after an upgrade: the older synapse that wrote it had none)
            added = {"added": "; ".join(seed.added)} if seed.added else {}
            event(log, "haproxy_isolation_seeded", service=service.name, path=str(file.path),
                  **added)  # fmt: skip
        elif seed.why_not:
            self._lost[service.name] = seed.why_not
            event(log, "haproxy_isolation_not_seeded", level=logging.WARNING,
                  service=service.name, path=str(file.path), reason=seed.why_not)  # fmt: skip

    def _unseed(self, names: set[str]) -> bool:
        """Services whose block read back from the running file is refused too: left out
        (their stand-in, in the list being applied, is taken back by ``substitute``)."""
        for name in sorted(names):
            del self._good[name]
            path = self._seeded.pop(name)
            self._lost[name] = "haproxy -c refused it too"
            self._settled = []
            event(log, "haproxy_isolation_not_seeded", level=logging.WARNING, service=name,
                  path=path, reason=self._lost[name])  # fmt: skip
        return bool(names)

    def settled(self, desired: list[DesiredService], result: ApplyResult) -> None:
        """After an apply: what HAProxy accepted becomes each service's last good block."""
        if result.reload in (ApplyOutcome.NONE, ApplyOutcome.DONE, ApplyOutcome.DISABLED):
            last, self._settled = self._settled, list(desired)
            if len(last) == len(desired):  # only the services that are new objects since
                desired = [desired[i] for i in moved(desired, last)]
            for service in desired:
                if service.name not in self.isolated:
                    self._good.pop(service.name, None)  # to the end: the newest accepted
                    self._good[service.name] = service.config
                    if self._seeded:  # (accepted since: no longer the file's)
                        self._seeded.pop(service.name, None)
            self._forget_gone(2 * len(self._settled) + 16)

    def _forget_gone(self, limit: int) -> None:
        """Above ``limit`` last good blocks, drop those of services no longer given, the
        longest unaccepted first. A service removed and added back with a block HAProxy
        refuses runs its block from before the removal; kept for ever, every service name
        ever configured held its ServiceConfig (~9 KB) for the process's life (soak s45:
        a SIGHUP a new service name, +1 block each)."""
        if len(self._good) <= limit:
            return
        names = {service.name for service in self._settled} | self.isolated.keys()
        gone = [name for name in self._good if name not in names]
        for name in gone[: len(self._good) - limit]:
            del self._good[name]
            self._seeded.pop(name, None)

    def outcome(self, first: ApplyResult, result: ApplyResult) -> ApplyResult:
        """One apply's result with isolated services: the others' outcome, or INVALID when
        nothing else needed a reload (the isolated change is not applied); its refusal
        as the error, and the isolated services named (the rest went through)."""
        if result is not first:
            result = ApplyResult(
                first.ops + result.ops,
                result.reload,
                first.reasons + result.reasons,
                first.config_written or result.config_written,
                first.error,
            )
        if not self.isolated or result.reload is not ApplyOutcome.NONE:
            return result
        error = result.error or next(iter(self.isolated.values())).error
        isolated = tuple(sorted(self.isolated))
        return replace(result, reload=ApplyOutcome.INVALID, error=error, isolated=isolated)

    def end(self, name: str, why: str) -> None:
        """End ``name``'s isolation (its port is free: ``port_taken``); the next apply of
        the whole input tries its block again."""
        self._clear(name, why)

    def _clear(self, name: str, why: str, gone: bool = False) -> None:
        self.isolated.pop(name, None)
        self._stand_ins.pop(name, None)
        self._lost.pop(name, None)
        self._settled = []
        if gone:  # no series left for a service that left the config
            with contextlib.suppress(KeyError):
                self.gauge.remove(name)
        else:
            self.gauge.labels(name).set(0)
        event(log, "haproxy_service_isolation_ended", service=name, detail=why)

    def waiting_for_address(self) -> bool:
        """Every isolated service waits for a bind address this host does not have."""
        return all(NOT_HERE in iso.error for iso in self.isolated.values())

    def degraded(self) -> list[str]:
        """/health's ``degraded``: services left out until their bind address is here (a
        standby LB without its VIP: its usual state, so said, not a failure)."""
        return [
            f"{name}: {line.rpartition('] : ')[2]}; until then: {self._runs(name)} (looked "
            f"for every {PORT_RECHECK_S:g} s)"
            for name, iso in sorted(self.isolated.items())
            for line in iso.error.splitlines()
            if NOT_HERE in line
        ]

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"error": iso.error, "since": iso.since, "running": self._runs(name)}
            for name, iso in sorted(self.isolated.items())
        }

    def _runs(self, name: str) -> str:
        """What HAProxy runs of an isolated service."""
        if name in self._seeded:
            return FROM_FILE
        if name in self._good:
            return "last good config"
        if name in self._lost:
            return f"not in HAProxy (its running block cannot be kept: {self._lost[name]})"
        if self.isolated[name].taken:
            if NOT_HERE in self.isolated[name].error:
                return "not in HAProxy (its bind address is not on this host)"
            return "not in HAProxy (its frontend port is taken by another process)"
        return "not in HAProxy (never valid)"
