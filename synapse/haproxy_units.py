"""Warnings for HAProxy times without a unit that are surely not milliseconds.

HAProxy reads a time without a suffix as milliseconds: ``timeout server 30`` gives a
server 30 ms to answer and ``inter 2`` checks every 2 ms. Both pass ``haproxy -c`` and
then fail requests or flood backends with checks, and both are far likelier "seconds"
than a choice (a deliberate few milliseconds is written ``30ms``). A warning names the
key and the line, what it means and what was probably meant; nothing is refused.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from smartstack.configfile import service_sources
from synapse.haproxy.words import words

if TYPE_CHECKING:
    from synapse.config import SynapseConfig

BELOW_MS = 100  # a bare number under it is read as seconds meant
# Server keywords taking a time (server lines, default-server, server_options).
SERVER_TIMES = ("inter", "fastinter", "downinter", "slowstart")


def unit_warnings(config: SynapseConfig, path: Path) -> list[str]:
    """One line per time that looks like seconds written without a unit, naming the file
    that gave it (a ``service_conf_dir`` service's own)."""
    files = service_sources(path, config.service_conf_dir)
    return [
        f"{files.get(service or '', path)}: {where}: `{line.strip()}`: {problem}"
        for service, where, line, server_options in _lines(config)
        for problem in _problems(["server", "x", *words(line)] if server_options else words(line))
    ]


def _lines(config: SynapseConfig) -> Iterator[tuple[str | None, str, str, bool]]:
    """(service, key, line, whether it is a server option string) of every HAProxy line
    the config gives (service None: the top-level ``haproxy`` block's)."""
    hap = config.haproxy
    if hap is not None:
        yield from _each(None, "haproxy.defaults", hap.defaults)
        yield from _each(None, "haproxy.shared_frontend", hap.shared_frontend)
        for title, body in hap.extra_sections.items():
            yield from _each(None, f"haproxy.extra_sections[{title!r}]", body)
    for name, service in config.services.items():
        own = service.haproxy
        where = f"services.{name}.haproxy"
        for section in ("frontend", "backend", "listen", "shared_frontend"):
            yield from _each(name, f"{where}.{section}", getattr(own, section))
        if own.server_options:
            yield name, f"{where}.server_options", own.server_options, True


def _each(
    service: str | None, where: str, lines: list[str]
) -> Iterator[tuple[str | None, str, str, bool]]:
    for index, line in enumerate(lines):
        yield service, f"{where}[{index}]", line, False


def _problems(found: list[str]) -> Iterator[str]:
    if len(found) >= 3 and found[0] == "timeout" and _bare_small(found[2]):
        yield _said(f"timeout {found[1]}", found[2])
    if found and found[0] in ("server", "default-server"):
        for keyword, value in itertools.pairwise(found):
            if keyword in SERVER_TIMES and _bare_small(value):
                yield _said(keyword, value)


def _bare_small(value: str) -> bool:
    return value.isdigit() and 0 < int(value) < BELOW_MS


def _said(keyword: str, value: str) -> str:
    return (
        f"{keyword} {value} is {value} milliseconds (HAProxy's unit when none is written); "
        f"perhaps `{keyword} {value}s` was meant (or `{value}ms` to keep it)"
    )
