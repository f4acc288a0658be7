"""The master a synapse left running before its ``config_file_path`` moved, found by our ports.

A synapse restarted with ``config_file_path`` moved (and the master socket beside it, by
default) finds nothing of its own there: the master it left runs the old file, under the
old socket. Started beside it, ours could not bind the ports (``ports``: refused, retried
for good) while the old one serves them with a config nobody updates. Nothing in the new
settings names it, so synapse records, beside every master socket it uses, which synapse
manages that master (``record_owner``: its pid and start time). A master is then ours to
take over (``left_master``) when it holds ports our config binds, its record names a
synapse that is gone (never a live one's: two synapses must not fight over a master), and
every TCP port it listens on is one our config binds (taking it stops nothing else).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import write_atomic
from synapse.haproxy import ports
from synapse.haproxy.adoption import Found, master_socket

log = logging.getLogger("synapse.haproxy.managed")
SUFFIX = ".owner"


def owner_path(socket: Path) -> Path:
    return socket.with_name(socket.name + SUFFIX)


def _started(pid: int | str) -> str | None:
    """Process ``pid``'s start time (clock ticks after boot; None: gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def record_owner(socket: Path, master: int) -> None:
    """Say that this synapse manages ``master`` (started or adopted), beside its socket."""
    me = {"master_pid": master, "synapse_pid": os.getpid(), "synapse_started": _started("self")}
    try:
        write_atomic(owner_path(socket), json.dumps(me) + "\n", mode=0o600)
    except OSError as err:  # (a moved config file would then find no master left: a clash)
        event(log, "haproxy_owner_not_recorded", level=logging.WARNING, error=str(err))


def _args(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _master_of(pid: int) -> int | None:
    """The HAProxy master of ``pid`` (itself, or the parent of a worker); None: no master
    CLI (not started the way synapse starts one)."""
    if b"-W" not in _args(pid) or master_socket(_args(pid)) is None:
        return None
    parent = _parent(pid)
    if parent is not None and master_socket(_args(parent)) is not None:
        return parent  # (a worker's command line is its master's)
    return pid


def orphaned(master: int) -> bool:
    """``master``'s record names a synapse that is gone (not one that manages it now)."""
    socket = master_socket(_args(master))
    if socket is None:
        return False
    try:
        record = json.loads(owner_path(Path(os.fsdecode(socket))).read_text())
        pid, started = int(record["synapse_pid"]), record["synapse_started"]
        if int(record["master_pid"]) != master:
            return False  # (a record of another master: says nothing of this one)
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no record (started by hand, or by an older synapse): not ours
    return _started(pid) != started  # (gone, or its pid reused since)


def _listening_ports(master: int) -> set[int]:
    """The TCP ports ``master`` and its workers listen on."""
    by_inode = {inode: port for _ip, port, inode in ports.listeners()}
    owners = ports.socket_owners(set(by_inode), ports.family(master))
    return {by_inode[inode] for inode, pids in owners.items() if pids}


def left_master(config_text: str, own_inodes: set[str]) -> int | None:
    """The master a gone synapse left on the ports ``config_text`` binds, when it serves
    nothing else (blocking: /proc, sock_diag); None: none, or not one to take."""
    clashes = ports.foreign_listeners(config_text, (), own_inodes)
    if not clashes or any(not clash.pids for clash in clashes):
        return None  # (an owner we cannot see: another user's)
    masters = {_master_of(pid) for clash in clashes for pid in clash.pids}
    if len(masters) != 1:
        return None
    master = masters.pop()
    if master is None or not orphaned(master):
        return None
    ours = {port for _written, _ip, port in ports.bind_addresses(config_text)}
    with contextlib.suppress(OSError):
        if _listening_ports(master) <= ours:
            return master
    return None


def left_on_our_ports(config: Path, own_inodes: set[str], why: str) -> Found:
    """``left_master`` for the config file ``config`` (blocking), adopted by its pid: the
    first reload replaces it."""
    try:
        text = config.read_text()
    except OSError:
        return Found(None)  # (no file yet: the start after the first render looks again)
    master = left_master(text, own_inodes)
    if master is None:
        return Found(None)
    event(log, "haproxy_master_moved", level=logging.WARNING, master_pid=master,
          masters=[master], socket="", config=str(config), when=why,
          detail="left on our ports by a synapse that is gone (config_file_path moved): "
          "adopted by its pid, the next reload replaces it")  # fmt: skip
    return Found(None, (master,), socketless=True, moved="its config file moved")
