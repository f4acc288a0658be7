"""Which config key wrote the line ``haproxy -c`` refuses (``synapse -k``, review s31).

HAProxy names a line of the rendered config (``[haproxy.cfg:36]``), which is a scratch
copy deleted when ``-k`` ends: the operator needs the file and key they wrote instead
(``services/api.yaml: services.api.haproxy.listen``), the line itself and HAProxy's own
words. The section a line sits in tells whose it is, as for the runtime isolation
(``synapse.haproxy.isolation.sections_by_line``); the service's lists tell which key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from synapse.config import HAProxyConfig
from synapse.haproxy.isolation import sections_by_line
from synapse.haproxy.seeding import SHARED_FRONTEND
from synapse.model import DesiredService

_WHERE = re.compile(r"\[([^\]\s]+):(\d+)\]")
_PROXY = re.compile(r"\b(?:backend|frontend|proxy|listen) '([^']+)'")
# "[ALERT]    (3991) : config : parsing [f:36] : " / "... : config : [f:41] : "
_PREFIX = re.compile(r"^\[ALERT\]\s*(?:\(\d+\)\s*)?:\s*(?:config\s*:\s*)?(?:parsing\s*)?")
# HAProxy's closing summary: says nothing the lines before it did not
_SUMMARY = ("Error(s) found in configuration file", "Fatal errors found in configuration")
SCRATCH = "the rendered config (a scratch copy -k deleted)"
MAX_LINES = 10  # HAProxy stops after a few; a refusal of every service is said in ten


def _norm(line: str) -> str:
    return " ".join(line.split())


class Blame:
    """Maps a refused line of the rendered config to the file and key that wrote it."""

    def __init__(
        self,
        hap: HAProxyConfig,
        services: Iterable[DesiredService],
        config_path: Path,
        source_of: Callable[[str], Path],
    ) -> None:
        self.hap = hap
        self.services = list(services)
        self.config_path = config_path
        self.source_of = source_of  # service name -> the file it came from

    def _service_for(self, proxy: str) -> DesiredService | None:
        # (exact names first: with services `web` and `web_zone_eu`, the proxy
        # `web_zone_eu` is that service's, not a zone backend of `web`)
        for service in self.services:
            if proxy in (service.name, service.backend_name):
                return service
        for service in self.services:
            if proxy.startswith(f"{service.backend_name}_zone_"):
                return service
        return None

    def key(self, header: str, line: str) -> tuple[Path, str]:
        """(file, key path) of ``line`` in the section ``header`` of the rendered config."""
        kind, _, proxy = header.partition(" ")
        line = _norm(line)
        top = {"global": self.hap.global_, "defaults": self.hap.defaults}
        if kind in top:
            return self.config_path, f"haproxy.{kind}{_index(top[kind], line)}"
        if header in self.hap.extra_sections:
            given = self.hap.extra_sections[header]
            return self.config_path, f"haproxy.extra_sections.{header}{_index(given, line)}"
        if proxy == SHARED_FRONTEND:
            for service in self.services:
                if index := _index(service.config.haproxy.shared_frontend, line):
                    return self.source_of(service.name), f"{_at(service)}.shared_frontend{index}"
            return (
                self.config_path,
                f"haproxy.shared_frontend{_index(self.hap.shared_frontend, line)}",
            )
        service = self._service_for(proxy) if kind in ("frontend", "backend", "listen") else None
        if service is None:
            return self.config_path, f"haproxy ({header})" if header else "haproxy"
        return self.source_of(service.name), _service_key(service, kind, line)

    def lines(self, message: str, candidate: Path, text: str) -> list[str]:
        """One line per refusal HAProxy reported: file, key, the line, HAProxy's words."""
        sections = sections_by_line(text)
        alerts = [line for line in message.splitlines() if "[ALERT]" in line] or [
            line for line in message.splitlines() if line.strip()
        ]
        out: list[str] = []
        for alert in alerts:
            if any(summary in alert for summary in _SUMMARY):
                continue
            said = _said(alert, candidate)
            where = [int(n) for p, n in _WHERE.findall(alert) if Path(p).name == candidate.name]
            if where and 0 < where[0] <= len(sections):
                header, rendered = sections[where[0] - 1]
                source, key = self.key(header, rendered)
                out.append(f"{source}: {key}: HAProxy rejects '{rendered}': {said}")
                continue
            proxies = [s for p in _PROXY.findall(alert) if (s := self._service_for(p))]
            # (a proxy's service, else no key: HAProxy's own trouble, said as it is)
            source, key = (
                (self.source_of(proxies[0].name), _at(proxies[0]))
                if proxies
                else (self.config_path, "haproxy")
            )
            out.append(f"{source}: {key}: HAProxy rejects the rendered config: {said}")
        if len(out) > MAX_LINES:
            more = len(out) - MAX_LINES + 1
            out[MAX_LINES - 1 :] = [f"{self.config_path}: haproxy: and {more} more"]
        return out


def _at(service: DesiredService) -> str:
    return f"services.{service.name}.haproxy"


def _service_key(service: DesiredService, kind: str, line: str) -> str:
    """``services.<name>.haproxy[.<list>]``: the list of the service's block that holds
    ``line``, or its server_options for a server line; the block alone when synapse
    wrote the line from other keys (``bind`` from ``port``, ...)."""
    block = service.config.haproxy
    # the section's own list first: a line given in both frontend and listen is either
    lists = {"frontend": block.frontend, "backend": block.backend, "listen": block.listen}
    order = [kind, "listen", "frontend", "backend"] if kind in lists else list(lists)
    for name in order:
        if index := _index(lists[name], line):
            return f"{_at(service)}.{name}{index}"
    options = _norm(block.server_options or "")
    if line.startswith("server ") and options and options in line:
        return f"{_at(service)}.server_options"
    return _at(service)


def _index(given: list[str], line: str) -> str:
    """``[i]``: where the (normalized) rendered ``line`` is in the list ``given``, else ""."""
    for index, entry in enumerate(given):
        if _norm(entry) == line:
            return f"[{index}]"
    return ""


def _said(alert: str, candidate: Path) -> str:
    """HAProxy's own words, without its prefix and the scratch file's name."""
    said = _PREFIX.sub("", alert.strip())
    said = re.sub(rf"\[{re.escape(str(candidate))}:(\d+)\]\s*:\s*", "", said, count=1)
    return said.replace(str(candidate), SCRATCH).strip()


def without_scratch(message: str, candidate: Path) -> str:
    """HAProxy's message with the scratch file named as one (it is gone when read)."""
    return message.replace(str(candidate), SCRATCH)
