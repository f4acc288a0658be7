"""Bind lines kept while a reload widens a frontend's address (127.0.0.1 -> 0.0.0.0).

A reload hands the old worker's listening sockets to the new one only where the new config
binds the same address and port. Change a service's ``bind_address`` from 127.0.0.1 to
0.0.0.0 on the same port and the new worker opens a wildcard socket beside the old worker's
127.0.0.1 one; the kernel gives a connection to the most specific listener, so clients of
127.0.0.1 keep queueing on the old socket until the old worker closes it, and everything
queued there is reset (16 of 16 concurrent clients, HAProxy 2.6). The same holds for a
v4 address or ``0.0.0.0`` under ``::`` (a v4 listener is preferred to a dual-stack one).

So while that socket lives, the section keeps a bind line for the old address beside the
new one, with the new line's options: the new worker inherits the socket, never closes
it, and the one frontend serves both. Kept: an address the section binds in the config
HAProxy runs (the config file, which synapse keeps equal to it: this survives a SIGHUP
and a synapse restart), that a wildcard of the new section covers on the same port, and
where a TCP socket listens now (HAProxy's, or synapse's copy of it:
``synapse.haproxy.listeners``). A start from nothing (nothing listens there) renders
without it. A move to another specific address (127.0.0.1 -> 127.0.0.2) keeps nothing: the
old address is refused from then on anyway.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

from smartstack.logs import event
from synapse.haproxy import ports

log = logging.getLogger("synapse.haproxy")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_TCP_PREFIXES = {"ipv4", "ipv6", "tcp", "tcp4", "tcp6"}  # others: unix@, fd@, udp@, ...
_NAMES = {"localhost": ("127.0.0.1", "::1")}  # synapse's default bind address
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})
SHARED_SECTION = "frontend shared-frontend"  # (the default layout's)
SECTIONS_SLACK = 16  # sections of services that left, remembered beyond twice the current


class _Endpoint(NamedTuple):
    written: str  # as the bind line has it ("localhost:3210")
    ips: tuple[IP, ...]  # what it binds (a name: each address it may stand for)
    port: int


def _endpoints(bind_line: str) -> list[_Endpoint]:
    """The TCP ``address:port`` items of a bind line (not port ranges, not other names)."""
    words = bind_line.split()
    found = []
    for written in words[1].split(",") if words[:1] == ["bind"] and len(words) > 1 else ():
        prefix, at, item = written.rpartition("@")
        host, colon, port = item.rpartition(":")
        if (at and prefix not in _TCP_PREFIXES) or not colon or not port.isdigit():
            continue
        host = host.strip("[]")
        if host in ("", "*"):
            host = "::" if prefix in ("ipv6", "tcp6") else "0.0.0.0"
        if ips := _ips(host):
            found.append(_Endpoint(written, ips, int(port)))
    return found


@functools.lru_cache(maxsize=1024)
def _ips(host: str) -> tuple[IP, ...]:
    """What ``host`` binds (() when not an address synapse knows): a thousand frontends on
    one address parse it once (ipaddress: ~20 us a parse)."""
    try:
        return tuple(ipaddress.ip_address(h) for h in _NAMES.get(host, (host,)))
    except ValueError:
        return ()


def _covers(wide: IP, dual: bool, old: IP) -> bool:
    """A new socket on ``wide`` would take ``old``'s clients, were the kernel not to prefer
    ``old`` while it listens."""
    if old == wide or not wide.is_unspecified:
        return False
    return old.version == wide.version or (wide.version == 6 and dual)


def _wide(bind_line: str) -> bool:
    """The bind line binds a wildcard address (quick: no address parsed)."""
    words = bind_line.split(maxsplit=2)
    items = words[1].split(",") if len(words) > 1 else ()
    return any(item.rpartition("@")[2].rpartition(":")[0] in _WILDCARDS for item in items)


class KeptBinds:
    """One renderer's: the bind lines a section keeps (``lines``)."""

    def __init__(
        self,
        config_path: Path | None,
        listening: Callable[[], Iterable[tuple[str, int, str]]] = ports.listeners,
    ) -> None:
        self.config_path = config_path
        self.listening = listening  # (ip, port, inode) of the TCP listeners, asked when needed
        self._file: dict[str, list[str]] | None = None  # read once, when first needed
        # section -> what its renders bound since (with the file: what it may run now)
        self._seen: dict[str, frozenset[str]] = {}  # (bind lines, spaces normalized)
        self._memo: dict[str, tuple[tuple[str, ...], frozenset[str], list[str]]] = {}
        self._logged: set[tuple[str, str]] = set()

    def lines(self, section: str, lines: Iterable[str]) -> list[str]:
        """The bind lines ``section`` keeps beside its ``lines`` (its new ones)."""
        binds = tuple(" ".join(words) for words in map(str.split, lines) if words[:1] == ["bind"])
        before = self._seen.get(section, frozenset())
        seen = self._seen[section] = before.union(binds)
        if not any(map(_wide, binds)):
            return []  # (the common case: no file read, no listener asked)
        ran = before.union(self._running().get(section, ()))
        if ran.issubset(binds):
            return []  # (a wildcard's common case: it binds what it ran, nothing more)
        memo = self._memo.get(section)
        if memo is not None and memo[:2] == (binds, seen):
            return memo[2]
        new = [(e, line) for line in binds for e in _endpoints(line)]
        taken = {(ip, e.port) for e, _ in new for ip in e.ips}  # (each address once)
        wanted: dict[str, tuple[_Endpoint, _Endpoint, str]] = {}  # line -> (old, new, new's)
        olds = {e for line in ran.difference(binds) for e in _endpoints(line)}
        for old in sorted(olds, key=lambda e: (e.port, e.written)):
            for wide, line in new:
                dual = "v6only" not in line.split()
                if old.port != wide.port or any((o, old.port) in taken for o in old.ips):
                    continue
                if any(_covers(wide.ips[0], dual, o) for o in old.ips):
                    taken.update((o, old.port) for o in old.ips)
                    options = " ".join(line.split()[2:])
                    wanted[f"bind {old.written} {options}".rstrip()] = (old, wide, line)
        kept = self._alive(section, wanted, {e for line in ran for e in _endpoints(line)})
        self._memo[section] = (binds, seen, kept)
        return kept

    def retain(self, sections: Iterable[str]) -> None:
        """A whole render's service frontends: once the sections remembered outnumber
        them well, those of services that left are forgotten (soak s45: kept, every
        service name ever configured stayed), but for those an address of which still
        listens: HAProxy may run them yet (their removal's reload waits its turn), and
        one added back must keep binding it (review s46: else its clients were reset)."""
        keep = {*sections, SHARED_SECTION}
        if len(self._seen) <= 2 * len(keep) + SECTIONS_SLACK:
            return
        keep |= self._still_listening(keep)
        self._seen = {s: b for s, b in self._seen.items() if s in keep}
        self._memo = {s: m for s, m in self._memo.items() if s in keep}
        self._logged = {(s, t) for s, t in self._logged if s in keep}

    def _still_listening(self, current: set[str]) -> set[str]:
        """The sections not ``current`` with an address where a socket listens that no
        ``current`` section binds (one they share is the current one's: a rename on
        the same port keeps nothing)."""
        bound = {(ip, e.port) for s in current for line in self._seen.get(s, ())
                 for e in _endpoints(line) for ip in e.ips}  # fmt: skip
        live = {(ipaddress.ip_address(ip), port) for ip, port, _ in self.listening()} - bound
        return {s for s, lines in self._seen.items() if s not in current
                and any((ip, e.port) in live for line in lines
                        for e in _endpoints(line) for ip in e.ips)}  # fmt: skip

    def _alive(
        self, section: str, wanted: dict[str, tuple[_Endpoint, _Endpoint, str]], ran: set[_Endpoint]
    ) -> list[str]:
        if not wanted:
            return []
        live = {(ipaddress.ip_address(ip), port) for ip, port, _ in self.listening()}
        kept = []
        for text, (old, wide, line) in wanted.items():
            if not any((ip, old.port) in live for ip in old.ips):
                continue  # nothing listens there (a start from nothing): let it go
            kept.append(text)
            first = wide not in ran  # (the change itself, not a render after it)
            if first and (section, text) not in self._logged:
                self._logged.add((section, text))
                event(log, "haproxy_bind_kept", section=section, kept=old.written,
                      bind=line.split()[1], detail="kept beside the new address while "
                      "HAProxy runs: its clients' connections are not reset")  # fmt: skip
        return kept

    def _running(self) -> dict[str, list[str]]:
        """Section header -> its bind lines, in the config file as this renderer found it."""
        if self._file is None:
            self._file = {}  # (no file yet: nothing runs that this renderer did not render)
            with contextlib.suppress(OSError, UnicodeDecodeError):
                if self.config_path is not None:
                    self._file = _bind_lines(self.config_path.read_text(encoding="utf-8"))
        return self._file


def _bind_lines(text: str) -> dict[str, list[str]]:
    """Section header -> its bind lines (sections without any left out). Only the lines with
    "bind" are looked at, and from each the lines above up to its section's header
    (unindented, as synapse writes it): 20,000 server lines are not split."""
    sections: dict[str, list[str]] = {}
    start = 0
    while (index := text.find("bind", start)) != -1:
        begin = text.rfind("\n", 0, index) + 1
        end = text.find("\n", index)
        start = end = len(text) if end == -1 else end
        words = text[begin:end].split()
        if words[:1] != ["bind"] or begin == 0:
            continue
        head = text.rfind("\n", 0, begin - 1) + 1
        while head > 0 and text[head] in " \t\n#":
            head = text.rfind("\n", 0, head - 1) + 1
        header = " ".join(text[head : text.find("\n", head)].split())
        sections.setdefault(header, []).append(" ".join(words))
    return sections
