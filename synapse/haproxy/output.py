"""Relaying a managed HAProxy's output (stdout and stderr) to synapse's log, cheaply.

Most of what HAProxy prints in a burst of membership changes are its notices about the
server state changes synapse's own runtime commands made: a server added, put in
maintenance, made ready, drained (one line each; ~1,500 lines for 1,000 changes). Logged
one record each they cost synapse a fifth of its CPU in a burst, so they are counted
instead: one ``haproxy_output_summary`` per SUMMARY_INTERVAL, how many of each kind and the
first SAMPLES lines. So is the old worker's "Proxy X stopped (cumulated conns: ...)" at every
reload (one per frontend and backend: ~400 lines a reload with 200 services), the normal end
of an old worker. Health-check transitions (and a backend's "no server available") are
relayed at once but their repeats within a window are held back and counted
(output_checks.py); one that then stands a few seconds (a state, not a flap) is relayed.
Every transition also goes to ``on_check`` (the panic's, synapse.haproxy.panic_watch).
Every other line (alerts, warnings, anything unknown) is relayed at once as
``haproxy_output``, after the summary of the notices before it (the log keeps HAProxy's
order). The pipe is read a chunk at a time (``asyncio.Protocol``), not a line per callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from smartstack.logs import event
from synapse.haproxy import output_checks
from synapse.haproxy.output_checks import Transition, Transitions, named_server, transition

log = logging.getLogger("synapse.haproxy.managed")
SUMMARY_INTERVAL = 1.0  # seconds: at most one summary of the server-state notices per
SAMPLES = 3  # lines quoted in a summary
CheckSink = Callable[[Transition], None]  # told of each check transition HAProxy prints
MAX_LINE = 65536  # bytes kept of a line not ended yet

# HAProxy's (2.6) notices about a server state change made by a command: "[WARNING]
# (14144) : CLI : Server be/s is going DOWN for maintenance. ...", "... : Server be/s is
# UP/READY (leaving forced maintenance).", "... : Server be/s enters drain state. ...",
# "... : Server be/s is UP (leaving forced drain).", "[NOTICE]   (14144) : CLI : 'server
# be/s' : New server registered.", "[NOTICE]   (14144) : Server deleted.". A health
# check's "Server be/s is DOWN, reason: ...", a DNS failure's "... going DOWN for
# maintenance (DNS timeout status)" are no such notice. A backup server's notices say
# "Backup Server". An old worker ending (a reload, a stop) prints "Proxy X stopped
# (cumulated conns: FE: 0, BE: 0)." per proxy (HAProxy 2.6 prints no "Stopping ..." nor
# "Proxy X started" lines; "Proxy X hard-stopped (N remaining conns will be closed)." cuts
# connections: relayed). One match per line; the group that matched names the kind.
_NOTICE = re.compile(
    r"\[(?:WARNING|NOTICE)\] +\(\d+\) : (?:CLI : )?(?:(?:Backup )?Server \S+ (?:"
    r"(is going DOWN for maintenance\.)|(is UP/READY \(leaving forced maint|is UP \(leaving "
    r"forced drain)|(enters drain state))|'server \S+' : (New server registered)|(Server deleted)"
    r"|Proxy \S+ (stopped) \(cumulated conns)"
)
_CLI_SERVER = re.compile(r" : CLI : (?:Backup )?Server ")
_KINDS = (None, "maint", "ready", "drain", "added", "deleted", "proxy_stopped")


def notice_kind(text: str) -> str | None:
    """The kind of a server-state notice HAProxy printed (None: any other line)."""
    found = _NOTICE.match(text)
    return None if found is None else _KINDS[found.lastindex or 0]


def output_level(text: str, stopping: bool) -> int:
    """The log level of a line relayed as such: HAProxy's alerts and warnings as such.
    (A "CLI : Server ..." line the notices do not cover, an operator's command on the
    same socket, say, is INFO: HAProxy's line does not say who sent it.)"""
    if stopping:
        return logging.INFO
    if "[ALERT]" in text:
        return logging.ERROR
    if "[WARNING]" in text and not _CLI_SERVER.search(text):
        return logging.WARNING
    return logging.INFO


class NoticeSummary:
    """The server-state notices counted since the last summary (pure: no clock, no I/O)."""

    def __init__(self, samples: int = SAMPLES) -> None:
        self.kinds: Counter[str] = Counter()
        self.samples: list[str] = []
        self._keep = samples

    def add(self, kind: str, text: str) -> bool:
        """Count one notice; True when it is the first since the last summary."""
        first = not self.kinds
        self.kinds[kind] += 1
        if len(self.samples) < self._keep:
            self.samples.append(text)
        return first

    def take(self) -> dict[str, Any] | None:
        """The summary's fields (None: nothing counted), and start counting anew."""
        if not self.kinds:
            return None
        fields = {
            "notices": sum(self.kinds.values()),
            "kinds": dict(sorted(self.kinds.items())),
            "samples": self.samples,
        }
        self.kinds, self.samples = Counter(), []
        return fields


class OutputRelay(asyncio.Protocol):
    """Reads HAProxy's output pipe: keeps the last lines in ``tail``, summarizes the
    server-state notices, holds back the repeats of health-check transitions and relays
    every other line at once. ``stopping``: HAProxy is being stopped (its alerts about its
    workers exiting are expected: INFO)."""

    def __init__(self, tail: deque[str], stopping: Callable[[], bool]) -> None:
        self.tail = tail
        self.on_check: CheckSink | None = None  # every transition, held back or not (panic)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stopping = stopping
        self._summary = NoticeSummary()
        self._timer: asyncio.TimerHandle | None = None
        self._checks = Transitions(output_checks.CHECK_WINDOW, SAMPLES, output_checks.SETTLE)
        self._checks_timer: asyncio.TimerHandle | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        self._rest = b""  # a line not ended yet

    def data_received(self, data: bytes) -> None:
        *lines, self._rest = (self._rest + data).split(b"\n")
        if len(self._rest) > MAX_LINE:  # (no end of line that long: relayed as it is)
            lines.append(self._rest)
            self._rest = b""
        if lines:  # (one decode for the chunk's whole lines)
            self._relay(b"\n".join(lines).decode(errors="replace").split("\n"))

    def eof_received(self) -> bool:
        return False  # (the pipe closes: connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        rest, self._rest = self._rest, b""
        self._relay([rest.decode(errors="replace")])
        self.flush()
        self.flush_checks()
        self.relay_settled(every=True)
        if not self.done.done():
            self.done.set_result(None)

    def _relay(self, lines: list[str]) -> None:
        loop = asyncio.get_running_loop()
        for line in lines:
            text = line.rstrip()
            if not text:
                continue
            self.tail.append(text)
            kind = notice_kind(text)
            if kind is not None:
                self._server_notice(kind, text)
                if self._summary.add(kind, text):
                    self._timer = loop.call_later(SUMMARY_INTERVAL, self.flush)
                continue
            found = transition(text)
            if found is not None and self.on_check is not None:
                self.on_check(found)
            if found is not None and not self._checks.offer(found, text, loop.time()):
                if self._checks_timer is None:
                    window = self._checks.window
                    self._checks_timer = loop.call_later(window, self.flush_checks)
                if self._settle_timer is None:
                    self._settle_timer = loop.call_later(self._checks.settle, self.relay_settled)
                continue
            self.flush()  # (the notices before it are logged before it)
            event(log, "haproxy_output", level=output_level(text, self._stopping()), line=text)

    def _server_notice(self, kind: str, text: str) -> None:
        """A server in maintenance (or added anew) has its held check line dropped; one
        leaving maintenance or drain gives its backend a server again."""
        server = named_server(text) if kind in ("maint", "added", "ready") else None
        if server is None:
            return
        if kind == "ready":
            self._checks.came_up(server)
        else:
            self._checks.forget(server)

    def relay_settled(self, every: bool = False) -> None:
        """Relay the held-back lines that stood long enough (a state, not a flap) at their
        own level (``held_s``: how long ago HAProxy printed them); wait for the next."""
        loop = asyncio.get_running_loop()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        lines = self._checks.settled(loop.time(), every)
        if lines:
            self.flush()  # (the notices before them are logged before them)
        for text, held_s in lines:
            level = output_level(text, self._stopping())
            event(log, "haproxy_output", level=level, line=text, held_s=held_s)
        due = self._checks.next_settle()
        if due is not None and not every:
            # (not sooner than a tenth of SETTLE: with many servers flapping the earliest
            # moves at every transition, and each look goes through them all)
            due = max(due, loop.time() + self._checks.settle / 10)
            self._settle_timer = loop.call_at(due, self.relay_settled)

    def flush(self) -> None:
        """Log the summary of the notices counted so far (if any)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fields = self._summary.take()
        if fields is not None:
            event(log, "haproxy_output_summary", interval_s=SUMMARY_INTERVAL, **fields)

    def flush_checks(self) -> None:
        """Log the summary of the transitions held back, then each server's current state
        if its last transition was held back (``held_s``: how long ago HAProxy printed it)."""
        if self._checks_timer is not None:
            self._checks_timer.cancel()
            self._checks_timer = None
        current, fields = self._checks.take(asyncio.get_running_loop().time())
        if fields is None:
            return
        self.flush()
        event(log, "haproxy_output_summary", interval_s=self._checks.window, **fields)
        for text, held_s in current:
            level = output_level(text, self._stopping())
            event(log, "haproxy_output", level=level, line=text, held_s=held_s)


async def close_relay(
    relay: asyncio.Task[None] | None, pipe: asyncio.ReadTransport | None, drain: bool = True
) -> None:
    """Stop relaying a master's output; ``drain``: it exited, relay its last lines first."""
    if pipe is not None and not drain:
        pipe.close()  # the relay reads EOF and ends
    if relay is not None:
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(relay, 1.0)
    if pipe is not None:
        pipe.close()
