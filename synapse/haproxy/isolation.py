"""Per-service isolation (edge, issue 13): one service's bad line must not block the others.

When the candidate config fails ``haproxy -c``, HAProxy names where: ``[file:line]`` in
its ALERT lines, sometimes a proxy (``backend 'x'``). ``culprits`` maps those to the
services whose sections hold them: a line of ``frontend <service>`` or ``backend
<backend_name>``, or a line of the shared frontend that a service's own
``shared_frontend`` lines brought. Those services are isolated: until their config block
changes, they are rendered with their last good block (the one in the last config HAProxy
accepted; a service that never had one is left out) and their servers still follow
discovery at runtime. Everyone else's change is applied: the controller renders again
and validates once more. An error that names no service (``global``, ``defaults``, the
operator's shared frontend lines) refuses the whole candidate as before.

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
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from smartstack.logs import event
from synapse.atomic import read_text
from synapse.config import ServiceConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy.settings import Settings
from synapse.identity import moved
from synapse.model import DesiredService

log = logging.getLogger("synapse.haproxy")

_WHERE = re.compile(r"\[([^\]\s:]+):(\d+)\]")
_PROXY = re.compile(r"\b(?:backend|frontend|proxy|listen) '([^']+)'")
_PROXY_KINDS = ("frontend", "backend", "listen")
SHARED_FRONTEND = "shared-frontend"  # the default template's name for it


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


class Isolation:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "synapse_service_config_isolated",
            "1 while a service's config block is refused by haproxy -c and its last good "
            "block runs instead (per-service isolation)",
            ["service"],
            registry=registry,
        )
        self.isolated: dict[str, Isolated] = {}
        self._good: dict[str, ServiceConfig] = {}  # last block HAProxy accepted, per service
        self._stand_ins: dict[str, tuple[DesiredService, DesiredService]] = {}
        self._settled: list[DesiredService] = []  # the input of the last ``settled``

    def substitute(
        self, desired: list[DesiredService], complete: bool = True
    ) -> list[DesiredService]:
        """``desired`` with isolated services on their last good block (left out when they
        have none); an isolated service whose block changed is tried again. ``complete``:
        ``desired`` is the whole input (an isolated service missing from it is gone)."""
        if not self.isolated:
            return desired  # the usual case: no loop over every service per apply
        if complete:
            names = {service.name for service in desired}
            for name in [n for n in self.isolated if n not in names]:
                self._clear(name, "the service is gone", gone=True)
        out = []
        for service in desired:
            iso, memo = self.isolated.get(service.name), self._stand_ins.get(service.name)
            if iso is None or (memo is not None and service is memo[1]):
                out.append(service)
            elif service.config is not iso.bad and service.config != iso.bad:
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
        names = culprits(result.error, str(candidate), text, desired) - set(self.isolated)
        by_name = {service.name: service for service in desired}
        for name in sorted(names):
            detail = [line for line in result.error.splitlines() if line.strip()][:3]
            self.isolated[name] = Isolated(by_name[name].config, "\n".join(detail), time.time())
            self._settled = []
            self.gauge.labels(name).set(1)
            kept = "its last good config" if name in self._good else "left out (never valid)"
            event(log, "haproxy_service_isolated", level=logging.ERROR, service=name,
                  error=detail[0][:300] if detail else "", detail=kept)  # fmt: skip
        return bool(names)

    def settled(self, desired: list[DesiredService], result: ApplyResult) -> None:
        """After an apply: what HAProxy accepted becomes each service's last good block."""
        if result.reload in (ApplyOutcome.NONE, ApplyOutcome.DONE, ApplyOutcome.DISABLED):
            last, self._settled = self._settled, list(desired)
            if len(last) == len(desired):  # only the services that are new objects since
                desired = [desired[i] for i in moved(desired, last)]
            for service in desired:
                if service.name not in self.isolated:
                    self._good[service.name] = service.config

    def outcome(self, first: ApplyResult, result: ApplyResult) -> ApplyResult:
        """One apply's result with isolated services: the others' outcome, or INVALID when
        nothing else needed a reload (the isolated change is not applied); its refusal
        as the error."""
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
        return replace(result, reload=ApplyOutcome.INVALID, error=error)

    def _clear(self, name: str, why: str, gone: bool = False) -> None:
        self.isolated.pop(name, None)
        self._stand_ins.pop(name, None)
        self._settled = []
        if gone:  # no series left for a service that left the config
            with contextlib.suppress(KeyError):
                self.gauge.remove(name)
        else:
            self.gauge.labels(name).set(0)
        event(log, "haproxy_service_isolation_ended", service=name, detail=why)

    def status(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"error": iso.error, "since": iso.since, "running": "last good config"
                   if name in self._good else "not in HAProxy (never valid)"}
            for name, iso in sorted(self.isolated.items())
        }  # fmt: skip
