"""Running state: what HAProxy runs right now, the planner's second input (no I/O here).

Filled by the controller from the runtime API (``show backend``, ``show servers state``,
kept in ``synapse.haproxy.view``) and from the config file on disk; ``Capabilities``
says what synapse may do to that HAProxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from synapse.haproxy.configtext import ParsedConfig

# srv_admin_state bits (HAProxy management guide, "show servers state").
ADMIN_FORCED_MAINT = 0x01
ADMIN_INHERITED_MAINT = 0x02
ADMIN_CONFIG_MAINT = 0x04
ADMIN_FORCED_DRAIN = 0x08
ADMIN_INHERITED_DRAIN = 0x10
ADMIN_RESOLUTION_MAINT = 0x20
# srv_op_state values.
OP_STOPPED, OP_STARTING, OP_RUNNING, OP_STOPPING = 0, 1, 2, 3
# srv_check_state bits (HAProxy's CHK_ST_*): `check` on the line sets CONFIGURED, `enable
# health` ENABLED. An added server starts with CONFIGURED alone (measured on 2.6: 2, then 6
# after `enable health`; PAUSED (8) joins in maint, INPROGRESS (1) during a check).
CHECK_CONFIGURED = 0x02
CHECK_ENABLED = 0x04
CHECK_BITS = CHECK_CONFIGURED | CHECK_ENABLED  # (what RunningServer.check_state keeps)
_MAINT = ADMIN_FORCED_MAINT | ADMIN_INHERITED_MAINT | ADMIN_RESOLUTION_MAINT
_DRAIN = ADMIN_FORCED_DRAIN | ADMIN_INHERITED_DRAIN


@dataclass(frozen=True, slots=True)
class RunningServer:
    backend: str
    name: str
    id: int
    addr: str
    port: int
    op_state: int = OP_RUNNING
    admin_state: int = 0
    weight: int = 1  # srv_uweight: the weight the runtime API sets
    initial_weight: int = 1  # srv_iweight: from the config
    # srv_check_state's CHECK_CONFIGURED and CHECK_ENABLED bits (CHECK_BITS; the others, a
    # check in progress or paused, come and go with no state synapse acts on).
    check_state: int = 0
    # When HAProxy last changed its state (`time.monotonic()` seconds, whole: read time less
    # srv_time_since_last_change; a maint resets it): the leftovers longest in maintenance
    # go first (``leftovers``). Not compared: it alone changes no state synapse acts on.
    changed_at: int = field(default=0, compare=False)
    # srv_check_status, the last check's (HAProxy's healthcheck_status: the panic's, which
    # reads it without ``known``). Not compared, like ``changed_at``: a re-read with
    # ``known`` (``parse_servers_state``) and the view keep an equal server's older one.
    check_status: int = field(default=0, compare=False)

    @property
    def forced_maint(self) -> bool:
        """Put in maintenance by an operator or synapse (runtime API or `disabled`)."""
        return bool(self.admin_state & ADMIN_FORCED_MAINT)

    @property
    def in_maint(self) -> bool:
        # 0x04 alone does not stop traffic: HAProxy keeps it after `state ready` lifts a
        # config `disabled` (measured on 2.6).
        return bool(self.admin_state & _MAINT)

    @property
    def forced_drain(self) -> bool:
        return bool(self.admin_state & ADMIN_FORCED_DRAIN)

    @property
    def usable(self) -> bool:
        """HAProxy may send it a new request: not DOWN, in maintenance, drain, weight 0."""
        return (
            self.op_state != OP_STOPPED and not self.admin_state & (_MAINT | _DRAIN)
        ) and self.weight > 0

    @property
    def check_disabled(self) -> bool:
        """`check` configured but its health checks disabled: an `add server` whose `enable
        health` never came (synapse stopped between the two, or it failed), or a panic's."""
        return self.check_state & CHECK_BITS == CHECK_CONFIGURED

    @property
    def checked(self) -> bool:
        """Its check is configured and running (not disabled: by a panic or an operator)."""
        return self.check_state & CHECK_BITS == CHECK_BITS

    @property
    def label(self) -> str:
        """A short human state for /status: MAINT, DRAIN, UP, DOWN, ..."""
        return state_label(self.op_state, self.admin_state)


def state_label(op_state: int, admin_state: int) -> str:
    """A server's short human state (``RunningServer.label``) from srv_op_state and
    srv_admin_state: MAINT, DRAIN, UP, DOWN, STARTING, NOLB."""
    if admin_state & _MAINT:
        return "MAINT"  # (``in_maint``)
    if admin_state & _DRAIN:
        return "DRAIN"
    return {OP_STOPPED: "DOWN", OP_STARTING: "STARTING", OP_STOPPING: "NOLB"}.get(op_state, "UP")


@dataclass(frozen=True)
class RunningState:
    """HAProxy as the controller found it.

    ``backends`` is None when the runtime API is not used or did not answer (then
    ``runtime_error`` says why; ``runtime_slow``: it connected but got no answer in time,
    not for long: ``slow_socket.is_slow``, ``SLOW_LIMIT``). ``config`` is the config file on
    disk, which synapse keeps equal to what HAProxy runs; None when files are not compared
    (``do_writes`` off) or, with ``config_missing``, when there is no file yet.
    """

    backends: Mapping[str, Mapping[str, RunningServer]] | None = None
    config: ParsedConfig | None = None
    config_missing: bool = False
    runtime_error: str | None = None
    runtime_slow: bool = False

    @property
    def runtime(self) -> bool:
        return self.backends is not None


@dataclass(frozen=True)
class Capabilities:
    """What synapse may do to this HAProxy."""

    version: tuple[int, int, int] | None = None  # None: unknown (runtime API silent)
    runtime_api: bool = True  # do_socket and a socket to talk to
    remove_servers: Literal["maint", "delete"] = "maint"
    # servers ("be/s") whose checks a panic holds disabled: not enabled (synapse.haproxy.panic)
    held_checks: frozenset[str] = frozenset()

    @property
    def can_add_servers(self) -> bool:
        """`add server` exists from HAProxy 2.4 on."""
        return self.version is not None and self.version[:2] >= (2, 4)
