"""Panic: a backend whose every server failed HAProxy's check by a timeout gets them back
(pure: rows of `show servers state <backend>`, what is held, the time -> commands).

Under overload a server's listen backlog fills, SYNs drop, and HAProxy's checks (and
``observe layer4 ... on-error mark-down``) time out and mark it DOWN although it only is
slow: when all of a backend's servers are so marked HAProxy answers 503 at once. Like
Envoy's panic threshold, synapse then routes to them anyway; its threshold is HAProxy
having NO usable server (primaries and backups), so a panic never takes a request from a
server that would have answered it. Only servers whose last check TIMED OUT (slow) or
PASSED (alive: ``observe`` marked it at one failed connection, and ``rise`` passes are
yet to come) are put back (``disable health`` then ``set server ... health up``: "no
check", UP); one that REFUSED (L4CON: dead, or a container whose ports come back within a
second: the Lua wait covers it) or failed otherwise is left DOWN. A status HANA
(``observe`` marked it) says neither: looked at again after the check's next run. After
the hold the checks are enabled again (the servers stay UP until ``fall`` checks fail: a
lasting overload starts the next panic).

While held, the backend is looked at every ``recheck_s``: once a server not held is
usable and its check passed (or it has none), the hold ends early and the held ones go
back DOWN to their checks (a hung server, which accepts and never answers, would else
keep failing its share although a server answers). ``observe`` still marks a held server
DOWN (HANA) and no check brings it back: such a server is put UP again. A server synapse
put in maintenance or removed meanwhile leaves the panic; a DOWN one not held is left to
its checks, unless HAProxy again has no usable server and its check too timed out or
passed (it then joins the panic). A look that fails (a reload, a slow socket) is tried
again a second later: HAProxy prints its alert once, and a hold must end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from synapse.haproxy.answers import CANNOT_FIND_BACKEND, parse_servers_state
from synapse.haproxy.running import CHECK_CONFIGURED, OP_STOPPED, RunningServer

# srv_check_status (HAProxy 2.6 include/haproxy/check-t.h, enum healthcheck_status)
HANA, L4OK, L4TOUT, L4CON, L6OK, L6TOUT, L7TOUT, L7OKD = 4, 6, 7, 8, 9, 10, 12, 15
TIMEOUTS = frozenset({L4TOUT, L6TOUT, L7TOUT})
# A DOWN server whose last check passed is alive, waiting for `rise` passes (after an
# `observe` mark, say); not L7OKCD (16: a 404 with `disable-on-404` asks for no new traffic).
PASSED = frozenset({L4OK, L6OK, L7OKD})
STATUS_NAMES = {HANA: "HANA", L4OK: "L4OK", L4TOUT: "L4TOUT", L4CON: "L4CON", L6OK: "L6OK",
                L6TOUT: "L6TOUT", L7TOUT: "L7TOUT", L7OKD: "L7OK"}  # fmt: skip
Rows = Mapping[str, RunningServer]  # a backend's servers by name, as a look reads them


def servers_of(answer: str, backend: str) -> dict[str, RunningServer]:
    """{server: RunningServer} of a `show servers state <backend>` answer (the rows of
    ``backend`` only; none when HAProxy has no such backend: its service removed)."""
    if answer.startswith(CANNOT_FIND_BACKEND):
        return {}
    return {s.name: s for s in parse_servers_state(answer) if s.backend == backend}


def status_name(check_status: int) -> str:
    """HAProxy's name of a srv_check_status (the number for one a panic does not read)."""
    return STATUS_NAMES.get(check_status, str(check_status))


@dataclass(frozen=True)
class Held:
    """A backend in panic: its servers put back (checks disabled) until ``until``."""

    since: float
    until: float
    servers: frozenset[str]
    raised: int = 0  # times a server was put UP again (``observe`` marked it DOWN)


@dataclass
class Step:
    """What one look decided: the commands to send (in order), what is held after them
    (None: no panic), when to look again (None: not before HAProxy says something)."""

    commands: list[str] = field(default_factory=list)
    held: Held | None = None
    look_again: float | None = None
    started: dict[str, str] = field(default_factory=dict)  # server -> its check status
    ended: tuple[str, ...] = ()  # servers whose checks were enabled again
    dropped: tuple[str, ...] = ()  # left the panic: removed or in maintenance
    raised: tuple[str, ...] = ()  # put UP again (``observe`` marked them DOWN)


def look(
    backend: str,
    rows: Rows,
    held: Held | None,
    now: float,
    hold_s: float,
    recheck_s: float,
) -> Step:
    """One look at ``backend`` (module docstring); ``recheck_s``: when a HANA status is
    looked at again (the check's ``downinter``: it replaces the status by then)."""
    if held is not None and now >= held.until:
        ended = tuple(sorted(s for s in held.servers if s in rows))
        return Step([f"enable health {backend}/{s}" for s in ended], None, ended=ended)
    if held is not None and any(_answers(r) for n, r in rows.items() if n not in held.servers):
        return _back(backend, rows, held)
    if held is not None:
        step = _keep(backend, rows, held)
        step.look_again = now + recheck_s if step.held is not None else None
        return step
    if any(row.usable for row in rows.values()):
        return Step()  # (the alert is stale: a server came back)
    candidates, undecided = _candidates(rows)
    again = now + recheck_s if undecided else None
    if not candidates:
        return Step(look_again=again)
    commands = _put_back(backend, candidates, disable=True)
    started = {name: status_name(rows[name].check_status) for name in candidates}
    servers = frozenset(candidates)
    return Step(commands, Held(now, now + hold_s, servers), now + recheck_s, started=started)


def _candidates(rows: Rows) -> tuple[list[str], bool]:
    """The DOWN servers a panic puts back (checked, weight above 0, not in maintenance,
    the last check timed out or passed), and whether one is undecided (HANA)."""
    down = [r for r in rows.values() if r.op_state == OP_STOPPED and not r.in_maint]
    put_back = sorted(r.name for r in down if r.checked and r.weight > 0 and _alive(r))
    return put_back, any(r.checked and r.check_status == HANA for r in down)


def _keep(backend: str, rows: Rows, held: Held) -> Step:
    """A look during a panic: servers removed or put in maintenance leave it; those
    ``observe`` marked DOWN go UP again."""
    dropped = tuple(sorted(s for s in held.servers if s not in rows or rows[s].in_maint))
    kept = held.servers.difference(dropped)
    raised = tuple(sorted(s for s in kept if rows[s].op_state == OP_STOPPED))
    # (one in maintenance gets its check back now: it is checked again once it leaves it)
    commands = [f"enable health {backend}/{s}" for s in dropped if s in rows]
    commands += _put_back(backend, raised, disable=False)
    joined: dict[str, str] = {}
    if not any(row.usable for row in rows.values()):  # (the HANA ones decided since, say)
        more, _ = _candidates(rows)
        joined = {name: status_name(rows[name].check_status) for name in more}
        commands += _put_back(backend, more, disable=True)
    kept = kept.union(joined)
    new = Held(held.since, held.until, kept, held.raised + len(raised)) if kept else None
    return Step(commands, new, started=joined, dropped=dropped, raised=raised)


def _back(backend: str, rows: Rows, held: Held) -> Step:
    """A server not held is usable again (its check passed, or one added): the threshold
    no longer holds, the held ones go back to their checks, DOWN (as before the panic; a
    hung one would take its share till ``fall`` checks failed), ``rise`` passes to come."""
    ended = tuple(sorted(s for s in held.servers if s in rows and not rows[s].in_maint))
    commands = [f"enable health {backend}/{s}" for s in sorted(held.servers) if s in rows]
    commands += [f"set server {backend}/{s} health down" for s in ended]
    return Step(commands, None, ended=ended)


def _answers(row: RunningServer) -> bool:
    """Usable, and its check passed (or it has none): not one just added, UP before its
    first check (a dead one would end the hold and take every request till ``fall``)."""
    return row.usable and (not row.check_state & CHECK_CONFIGURED or row.check_status in PASSED)


def _alive(row: RunningServer) -> bool:
    return row.check_status in TIMEOUTS or row.check_status in PASSED


def _put_back(backend: str, servers: Iterable[str], disable: bool) -> list[str]:
    commands = []
    for server in servers:
        if disable:
            commands.append(f"disable health {backend}/{server}")
        commands.append(f"set server {backend}/{server} health up")
    return commands
