"""Finding the HAProxy master that runs our config, so synapse never starts a second one.

A master started with our config file (``-f``) and our master socket (``-S``) is ours:
synapse restarted and adopts it. Its master socket may not answer for a moment: the
master re-executes itself for a reload (a synapse started right after one), or is busy.
One unanswered ``show proc`` must not make synapse start a second master beside it: that
one would bind the same ports (SO_REUSEPORT), the first would keep a share of the
connections with a config nobody updates, and outlive synapse. So while such a master
lives (seen in /proc), ``show proc`` is asked again, for up to ``timeout`` seconds; one
that never answers is reported (``haproxy_adopt_failed``) and a start refused.

Except one whose master socket file is gone (removed while it ran: synapse.haproxy.replacement):
nothing will ever answer there. A lone master that has run for ``timeout`` seconds already
(not one still starting, before it binds its socket), its socket missing at two looks, is
adopted by its pid (``haproxy_master_socketless``), and the first reload replaces it.

A master is told from its workers (same command line) by its children: a worker of ours
has none, and an orphaned worker of a master that just died exits on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from smartstack.logs import event
from synapse.haproxy import pids
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.runtime import MasterClient
from synapse.haproxy.sockets import HAProxySocketError

log = logging.getLogger("synapse.haproxy.managed")
POLL = 0.2  # seconds between two `show proc` while a master lives but does not answer


@dataclass(frozen=True)
class Found:
    proc: ProcInfo | None  # the master answered with a worker: adopt it
    masters: tuple[int, ...] = ()  # (proc None) live masters running our config
    error: str = ""  # (masters) why they cannot be adopted, and that none is started
    socketless: bool = False  # (masters: one) its socket file is gone: adopt it by pid


def _runs_ours(args: list[bytes], config: bytes, socket: bytes) -> bool:
    pairs = list(itertools.pairwise(args))
    return (b"-f", config) in pairs and any(
        flag == b"-S" and value.split(b",")[0] == socket for flag, value in pairs
    )


def running_masters(config: Path, socket: Path, proc: Path = Path("/proc")) -> tuple[int, ...]:
    """Pids of the live HAProxy masters started with ``-f config -S socket``."""
    ours: dict[int, int] = {}  # pid -> parent pid
    wanted, sock = str(config).encode(), str(socket).encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not _runs_ours((entry / "cmdline").read_bytes().split(b"\0"), wanted, sock):
                continue  # (a zombie's command line is empty)
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ours[int(entry.name)] = int(stat[stat.rfind(")") + 2 :].split()[1])
    parents = set(ours.values())
    return tuple(sorted(pid for pid in ours if pid in parents))


async def find_master(
    master: MasterClient, config: Path, socket: Path, timeout: float, why: str
) -> Found:
    """The master's `show proc` when it answers with a worker; else the live masters that
    run our config (asked again while there are some, for up to ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    attempts = gone = 0
    while True:
        attempts += 1
        try:
            proc = await master.show_proc()
            if proc.workers:
                return Found(proc)
            error = "`show proc` lists no worker"
        except HAProxySocketError as err:
            error = str(err) or type(err).__name__
        masters = await asyncio.to_thread(running_masters, config, socket)
        if not masters:
            return Found(None)  # nothing of ours runs: start one
        gone = gone + 1 if _socketless(masters, socket, timeout) else 0
        if gone >= 2:
            event(log, "haproxy_master_socketless", level=logging.WARNING, master_pid=masters[0],
                  socket=str(socket), when=why, detail="its socket files were removed while it "
                  "ran: adopted by its pid, the next reload replaces it")  # fmt: skip
            return Found(None, masters, socketless=True)
        if time.monotonic() >= deadline and not gone:  # (gone once: one more look)
            event(log, "haproxy_adopt_failed", level=logging.ERROR, masters=list(masters),
                  attempts=attempts, error=error[:500], when=why)  # fmt: skip
            listed = ", ".join(map(str, masters))
            why_not = f"HAProxy master {listed} runs {config} but gives no worker on {socket}"
            return Found(None, masters, f"{why_not} ({error[:500]}): not starting a second one")
        await asyncio.sleep(POLL)


def _socketless(masters: tuple[int, ...], socket: Path, started_within: float) -> bool:
    """One master, older than a start may take to bind its socket, and no socket file."""
    if len(masters) != 1 or socket.exists():
        return False
    started = pids.age(masters[0])
    return started is not None and started >= started_within
