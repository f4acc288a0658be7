"""A backend's servers after runtime commands that succeeded, as `show servers state` shows
them, without asking HAProxy (pure: no I/O).

After an apply's commands synapse read their backends back (`show servers state B`),
~0.3 ms of CPU per change at fleet scale (issue 15). The fields the planner decides on
follow from the commands alone, as measured on HAProxy 2.6:

- ``add server B/S ADDR [options] id N``: present, id N, address and port from ADDR, in
  forced maintenance and stopped (admin 0x01, op 0), weight and initial weight from
  ``weight W`` (default 1); with ``check``, its check configured and disabled
  (srv_check_state 2);
- ``set server B/S state maint``: forced maintenance bit set, stopped;
- ``set server B/S state ready``: forced maintenance and forced drain bits cleared;
  running, unless another maintenance bit (inherited, DNS) remains;
- ``set weight B/S W``: weight W (the initial weight stays);
- ``set server B/S addr A port P``: address A, port P;
- ``enable health B/S``: its check enabled (srv_check_state 6);
- ``del server B/S``: gone;
- and the time of the change (``changed_at``: HAProxy's last change) is the command's for
  an added server, a maint and a ready.

Anything else (a drain, an add without ``id``, a ``disabled`` add, an address in a form
HAProxy may print otherwise, a command to a server the view lacks) gives None: the
backend is read back as before. What HAProxy changes by itself later (health checks) is
read by the reader's later check (``RunningReader.ran``) and the background sweep. So is
an operational state other than running after ``state ready`` (``slowstart``'s STARTING,
a ``track``ed server's, an agent's verdict): until that check, /status may show running;
the planner does not decide on the operational state, so no command follows from it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from smartstack.tasks import cancel_and_wait
from synapse.haproxy.hosts import IPV4
from synapse.haproxy.ops import AddServer, DelServer, EnableHealth, Op, SetAddr, SetState, SetWeight
from synapse.haproxy.running import (
    ADMIN_FORCED_DRAIN,
    ADMIN_FORCED_MAINT,
    ADMIN_INHERITED_MAINT,
    ADMIN_RESOLUTION_MAINT,
    CHECK_CONFIGURED,
    CHECK_ENABLED,
    OP_RUNNING,
    OP_STOPPED,
    RunningServer,
)

if TYPE_CHECKING:
    from synapse.haproxy.view import RunningView

_STILL_DOWN = ADMIN_INHERITED_MAINT | ADMIN_RESOLUTION_MAINT  # (bits `state ready` keeps)
CHECK_AFTER = 1.0  # seconds before backends the view followed commands in are read again


class Recheck:
    """Backends the view followed (``follow``), handed to ``due`` CHECK_AFTER seconds
    after the first of them, together (the reader reads them again)."""

    def __init__(self, due: Callable[[set[str]], None]) -> None:
        self._due = due
        self._names: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, names: Collection[str]) -> None:
        self._names.update(names)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(CHECK_AFTER)
        names, self._names = self._names, set()
        self._due(names)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


def follow(view: RunningView, ops: Sequence[Op], done: Collection[Op]) -> tuple[set[str], set[str]]:
    """(the backends ``ops`` touched, those the view followed): a backend is followed when
    the view is trusted there (valid, read since the last reload, not stale) and every
    command to it succeeded with an effect ``after_ops`` knows."""
    by_backend: dict[str, list[Op]] = {}
    for op in ops:
        by_backend.setdefault(op.backend, []).append(op)
    followed: set[str] = set()
    if view.valid:
        ok, stale, unread = set(done), view.stale, view.unread
        for name, its in by_backend.items():
            servers = view.backends.get(name)
            if servers is None or name in stale or name in unread:
                continue
            if all(op in ok for op in its):
                new = after_ops(name, servers, its)
                if new is not None:
                    view.follow(name, new)
                    followed.add(name)
    return set(by_backend), followed


def after_ops(
    backend: str,
    servers: Mapping[str, RunningServer],
    ops: Sequence[Op],
    now: int | None = None,
) -> dict[str, RunningServer] | None:
    """``servers`` of ``backend`` after ``ops`` (all of them succeeded, in order); None when
    one of them has an effect not modelled here (read the backend instead). ``now``: the
    commands' time, as ``changed_at`` (None: the clock's, as the parse of a read)."""
    now = int(time.monotonic()) if now is None else now
    new = dict(servers)
    for op in ops:
        if op.backend != backend:
            return None
        current = new.get(op.server)
        if isinstance(op, AddServer):
            added = _added(backend, op, now)
            if current is not None or added is None:
                return None
            new[op.server] = added
            continue
        if current is None:
            return None
        c = current  # (RunningServer(...) directly: dataclasses.replace costs 3x as much)
        if isinstance(op, SetState) and op.state == "maint":
            admin = c.admin_state | ADMIN_FORCED_MAINT
            new[op.server] = RunningServer(c.backend, c.name, c.id, c.addr, c.port, OP_STOPPED,
                                           admin, c.weight, c.initial_weight,
                                           c.check_state, now, c.check_status)  # fmt: skip
        elif isinstance(op, SetState) and op.state == "ready":
            admin = c.admin_state & ~(ADMIN_FORCED_MAINT | ADMIN_FORCED_DRAIN)
            state = c.op_state if admin & _STILL_DOWN else OP_RUNNING
            new[op.server] = RunningServer(c.backend, c.name, c.id, c.addr, c.port, state,
                                           admin, c.weight, c.initial_weight,
                                           c.check_state, now, c.check_status)  # fmt: skip
        elif isinstance(op, SetWeight):
            new[op.server] = dataclasses.replace(c, weight=op.weight)
        elif isinstance(op, SetAddr):
            if not _canonical(op.addr):
                return None
            new[op.server] = dataclasses.replace(c, addr=op.addr, port=op.port)
        elif isinstance(op, DelServer):
            del new[op.server]
        elif isinstance(op, EnableHealth):
            if c.check_disabled:
                new[op.server] = dataclasses.replace(c, check_state=c.check_state | CHECK_ENABLED)
        else:
            return None  # (a drain, or a kind added later: read it)
    return new


def _added(backend: str, op: AddServer, now: int) -> RunningServer | None:
    host, sep, port = op.address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    tokens = op.options.split()
    if not sep or not port.isdigit() or not _canonical(host) or "disabled" in tokens:
        return None
    ident = _value(tokens, "id")
    if ident is None:
        return None  # (HAProxy picks one: only a read tells which)
    weight = _value(tokens, "weight")
    weight = 1 if weight is None else weight
    checked = _last_of(tokens, "check", "no-check")  # (added with checks disabled)
    check_state = CHECK_CONFIGURED if checked else 0
    return RunningServer(backend, op.server, ident, host, int(port), OP_STOPPED,
                         ADMIN_FORCED_MAINT, weight, weight, check_state, now)  # fmt: skip


def _last_of(tokens: list[str], flag: str, negation: str) -> bool:
    """Whether ``flag`` comes in ``tokens`` after any ``negation`` (HAProxy takes the last)."""
    for token in reversed(tokens):
        if token in (flag, negation):
            return token == flag
    return False


def _value(tokens: list[str], key: str) -> int | None:
    """The integer after ``key`` in ``tokens`` (the last one: HAProxy takes the last)."""
    found = None
    for i, token in enumerate(tokens[:-1]):
        if token == key and tokens[i + 1].isascii() and tokens[i + 1].isdigit():
            found = int(tokens[i + 1])
    return found


def _canonical(host: str) -> bool:
    """An IP address as HAProxy prints it back (else a read says how it prints it)."""
    if IPV4.fullmatch(host):  # (printed as written; ~20x cheaper than an address object)
        return True
    try:
        return str(ipaddress.ip_address(host)) == host
    except ValueError:
        return False


class TouchedAt:
    """When runtime commands last changed each backend (the reader's ``touched_within``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._at: dict[str, float] = {}

    def note(self, touched: Collection[str], backends: Collection[str]) -> None:
        now = self._clock()
        for name in touched:
            self._at[name] = now
        if len(self._at) > 2 * len(backends) + 64:  # backends that went
            self._at = {name: t for name, t in self._at.items() if name in backends}

    def within(self, seconds: float) -> set[str]:
        """Those changed in the last ``seconds`` (the older ones are forgotten)."""
        since = self._clock() - seconds
        self._at = {name: t for name, t in self._at.items() if t >= since}
        return set(self._at)
