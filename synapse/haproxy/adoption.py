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

And except one running our config file under another master socket: synapse was restarted
with ``managed.master_socket_path`` moved. Nothing would ever answer for it on ours, and a
second master would bind its ports beside it (SO_REUSEPORT), the first serving on with a
config nobody updates. It is adopted by its pid (``haproxy_master_moved``), and the first
reload replaces it too (synapse.haproxy.moved finds one left under a moved config file).

A master is told from its workers (same command line) by its children: a worker of ours
has none, and an orphaned worker of a master that just died exits on its own. Only an HAProxy
process (its name, /proc/<pid>/comm) counts: an init or shell that started it with the same
arguments (tini, ``sh -c "exec haproxy -f .. -S .."``) is no master, and a signal meant for one
would reach HAProxy through it (tini passes a reload's SIGUSR1 on: HAProxy soft-stopped). A
binary named otherwise counts by the file it runs (/proc/<pid>/exe: HAProxy's, or managed.binary's).

The master answering on our socket must be in synapse's PID namespace (HAProxy in its own
container: synapse shares its PID namespace, docs/docker.md): the pid it gives is HAProxy's
own; elsewhere it names no process of ours, or another one (synapse itself). Such a master is
not adopted (``haproxy_adopt_failed``, ``reason``), nor a second one started beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import time
from collections.abc import Callable, Collection
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
    socketless: bool = False  # (masters) its socket is gone, or moved: adopt them by pid
    moved: str = ""  # (socketless) how they differ from the settings: replaced at a reload
    foreign: int = 0  # (proc None) the master pid that answered is not one synapse can see


def master_socket(args: list[bytes]) -> bytes | None:
    """The ``-S`` path of an HAProxy command line (its options cut)."""
    for flag, value in itertools.pairwise(args):
        if flag == b"-S":
            return value.split(b",")[0]
    return None


# /proc/<pid>/comm of an HAProxy binary starts so (haproxy, haproxy-2.8, hapee-lb)
HAPROXY_NAMES = ("haproxy", "hapee")
# managed.binary's file (resolved), told by the controller: a build or a symlink named
# otherwise (`lb -> /usr/sbin/haproxy`: comm is the name executed) is HAProxy too.
_BINARIES: set[str] = set()


def known_binary(binary: str) -> None:
    """Count processes running ``binary`` (a name on PATH or a path) as HAProxy."""
    found = shutil.which(binary)
    if found is not None:
        _BINARIES.add(os.path.realpath(found))


def is_haproxy(comm: str, entry: Path | None = None) -> bool:
    """Whether a process named ``comm`` (/proc/<pid>/comm; ``entry``: its /proc directory)
    is an HAProxy binary: by its name, else by the file it runs (/proc/<pid>/exe, readable
    for our own uid: HAProxy's name, or managed.binary's file)."""
    if comm.rstrip("\n").startswith(HAPROXY_NAMES):
        return True
    if entry is None:
        return False
    try:
        exe = os.readlink(entry / "exe")
    except OSError:
        return False
    return os.path.basename(exe).startswith(HAPROXY_NAMES) or exe in _BINARIES


def _runs_ours(args: list[bytes], config: bytes, socket: bytes | None) -> bool:
    """Started with ``-f config -S socket`` (socket None: under any master socket)."""
    found = master_socket(args)
    pairs = list(itertools.pairwise(args))
    return (b"-f", config) in pairs and found is not None and socket in (None, found)


def running_masters(
    config: Path, socket: Path | None, proc: Path = Path("/proc")
) -> tuple[int, ...]:
    """Pids of the live HAProxy masters started with ``-f config -S socket`` (None: with
    any master socket)."""
    ours: dict[int, int] = {}  # pid -> parent pid
    wanted, sock = str(config).encode(), None if socket is None else str(socket).encode()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not _runs_ours((entry / "cmdline").read_bytes().split(b"\0"), wanted, sock):
                continue  # (a zombie's command line is empty)
            if not is_haproxy((entry / "comm").read_text(), entry):
                continue  # (tini or a shell with the same arguments)
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
            if proc.workers and (reason := await asyncio.to_thread(unseen, proc.master_pid)):
                event(log, "haproxy_adopt_failed", level=logging.ERROR, masters=[proc.master_pid],
                      attempts=attempts, reason=reason, when=why)  # fmt: skip
                error = f"HAProxy master {proc.master_pid} answers on {socket}, but {reason}"
                return Found(
                    None, error=f"{error}: not adopted, none started", foreign=proc.master_pid or 0
                )
            if proc.workers:
                return Found(proc)
            error = "`show proc` lists no worker"
        except HAProxySocketError as err:
            error = str(err) or type(err).__name__
        masters = await asyncio.to_thread(running_masters, config, socket)
        if not masters:  # nothing of ours runs: start one, unless one runs under another -S
            moved = await asyncio.to_thread(_moved, config, socket, why)
            if moved is not None:
                return moved
            await asyncio.sleep(POLL)  # (ours showed up between the two looks: asked again)
            continue
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


PID_NAMESPACE = (
    "synapse cannot see it: run synapse in HAProxy's PID namespace "
    '(docker --pid container:<haproxy>, compose pid: "service:haproxy")'
)


def unseen(master: int | None, proc: Path = Path("/proc")) -> str:
    """Why the master pid ``show proc`` gave is not a process synapse can adopt by its pid
    (empty: it can; HAProxy older than 2.x gives none: nothing to check)."""
    if not master:
        return ""
    try:
        comm = (proc / str(master) / "comm").read_text()
    except OSError:
        return f"no pid {master} in synapse's PID namespace: {PID_NAMESPACE}"
    return foreign_name(master, comm, proc / str(master))


def foreign_name(master: int, comm: str, entry: Path | None = None) -> str:
    """Why pid ``master``, named ``comm`` in synapse's PID namespace, is not the master
    that answered (empty: it is an HAProxy)."""
    if is_haproxy(comm, entry):
        return ""
    name = comm.rstrip("\n")
    return f"pid {master} in synapse's PID namespace is {name}, not HAProxy: {PID_NAMESPACE}"


def beside(
    config: Path, socket: Path, adopted: int, orphaned: Callable[[int], bool],
    retiring: Collection[int],
) -> tuple[int, ...]:  # fmt: skip
    """Other live masters running our config beside the ``adopted`` one: a synapse stopped or
    killed while its new master replaced the old one. Ours under our master socket; under
    another only when ``orphaned`` (its owner record names a synapse that is gone: never a live
    one's). The first reload soft-stops them (blocking: /proc)."""
    ours = running_masters(config, socket)
    found = tuple(
        pid for pid in running_masters(config, None)
        if pid != adopted and pid not in retiring and (pid in ours or orphaned(pid))
    )  # fmt: skip
    if found:
        event(log, "haproxy_masters_beside", level=logging.WARNING, master_pid=adopted,
              masters=list(found), config=str(config), detail="they run our config beside "
              "the adopted master (synapse stopped while it replaced one?): the first reload "
              "soft-stops them")  # fmt: skip
    return found


def _moved(config: Path, socket: Path, why: str) -> Found | None:
    """Masters running our config under another master socket (``managed.master_socket_path``
    moved): adopted by their pids, the first reload replaces them; else none runs. None: one
    under ours started after the first look (its worker forked between the two)."""
    masters = running_masters(config, None)
    if not masters:
        return Found(None)
    if set(masters) & set(running_masters(config, socket)):
        return None
    old = ""
    with contextlib.suppress(OSError):
        args = Path(f"/proc/{masters[0]}/cmdline").read_bytes().split(b"\0")
        old = (master_socket(args) or b"").decode(errors="replace")
    event(log, "haproxy_master_moved", level=logging.WARNING, master_pid=masters[0],
          masters=list(masters), socket=old, config=str(config), when=why,
          detail="it runs our config under another master socket: adopted by its pid, "
          "the next reload replaces it")  # fmt: skip
    return Found(None, masters, socketless=True, moved=f"its master socket moved (was {old})")


def _socketless(masters: tuple[int, ...], socket: Path, started_within: float) -> bool:
    """One master, older than a start may take to bind its socket, and no socket file."""
    if len(masters) != 1 or socket.exists():
        return False
    started = pids.age(masters[0])
    return started is not None and started >= started_within
