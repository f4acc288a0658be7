"""The HAProxy side's status: one dataclass the controller updates, JSON-ready for /status."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from smartstack.logs import event
from smartstack.registry_address import join_host_port
from synapse.haproxy.running import RunningServer

if TYPE_CHECKING:
    from synapse.config import HAProxyConfig
    from synapse.haproxy.configfile import ConfigFile
    from synapse.haproxy.managed import ManagedHAProxy
    from synapse.haproxy.reader import RunningReader
    from synapse.haproxy.reload_gate import ReloadGate
    from synapse.haproxy.settings import Settings

log = logging.getLogger("synapse.haproxy")

RECENT_OPS = 50  # runtime commands kept for /status


@dataclass
class HAProxyStatus:
    """Everything /status shows under "haproxy"; ``backends`` is
    {backend: {server: {state, weight, address}}} of the backends read from the running
    HAProxy, ``unread_backends`` the others it runs (``running_backends``),
    ``haproxy_pids`` only in managed mode."""

    mode: str = "no_reloads"  # managed | reload_command | no_reloads
    config_file: str | None = None
    haproxy_version: str | None = None
    reloads: int = 0
    starts: int = 0
    last_reload: dict[str, Any] | None = None
    pending_reload: dict[str, Any] | None = None
    validation_error: dict[str, Any] | None = None  # the candidate refused now
    last_validation_error: dict[str, Any] | None = None
    last_reload_error: dict[str, Any] | None = None
    last_apply: dict[str, Any] | None = None
    last_ops: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_OPS))
    runtime_error: str | None = None
    runtime_slow_s: float | None = (
        None  # connects, no answer in time, that long (slow_socket.is_slow)
    )
    config_write_error: str | None = None
    render_warnings: tuple[str, ...] = ()
    backends: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    unread_backends: list[str] = field(default_factory=list)
    haproxy_pids: dict[str, int | None] | None = None
    held_listeners: list[str] | None = None  # managed, hold_listeners: what synapse holds

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["last_ops"] = list(self.last_ops)
        out["render_warnings"] = list(self.render_warnings)
        for key in ("haproxy_pids", "held_listeners"):
            if out[key] is None:
                del out[key]
        return out

    def snapshot(
        self,
        mode: str,
        settings: Settings,
        reader: RunningReader,
        gate: ReloadGate,
        file: ConfigFile | None,
        managed: ManagedHAProxy | None,
    ) -> dict[str, Any]:
        """Refresh what is read from the controller's parts; JSON-ready, for /status."""
        self.mode = mode
        self.config_file = str(settings.config_path) if settings.config_path else None
        self.haproxy_version = ".".join(map(str, reader.version)) if reader.version else None
        self.pending_reload = None
        if gate.pending is not None:
            self.pending_reload = {"reason": gate.pending.summary,
                                   "due_in_s": round(gate.due_in(), 3)}  # fmt: skip
        self.runtime_error = reader.runtime_error
        slow = reader.slow_for() if reader.runtime_error is not None else None
        self.runtime_slow_s = None if slow is None else round(slow, 1)
        self.config_write_error = file.error if file is not None else None
        self.backends, self.unread_backends = running_backends(reader)
        if managed is not None:
            self.haproxy_pids = {"master": managed.master_pid, "worker": managed.worker_pid}
            if managed.listeners is not None:
                self.held_listeners = [f"{h}:{p}" for h, p in managed.listeners.addresses]
        return self.to_json()

    # --- what the controller records ------------------------------------------------------

    def applied(self, reason: str, ops: int, reload: str, seconds: float) -> None:
        self.last_apply = {"at": time.time(), "reason": reason, "ops": ops, "reload": reload,
                           "duration_ms": round(seconds * 1000, 2)}  # fmt: skip

    def rendered(self, warnings: tuple[str, ...]) -> None:
        """A render's warnings: logged when they change, not at every render."""
        if warnings != self.render_warnings:
            for warning in warnings:
                event(log, "haproxy_render_warning", level=logging.WARNING, detail=warning)
        self.render_warnings = warnings

    def reloaded(self, kind: str, reason: str, seconds: float, started: bool) -> None:
        if started:
            self.starts += 1
        else:
            self.reloads += 1
        self.last_reload_error = None
        self.last_reload = {"at": time.time(), "kind": kind, "reason": reason,
                            "duration_ms": round(seconds * 1000, 1)}  # fmt: skip

    def refused(self, error: str, candidate: str | None, reasons: list[str]) -> None:
        self.validation_error = {"at": time.time(), "message": error, "candidate": candidate,
                                 "reasons": reasons[:10]}  # fmt: skip
        self.last_validation_error = self.validation_error

    def in_step(self) -> None:
        """HAProxy runs the desired state without a reload: a refused candidate or a failed
        reload is no problem any more (a start that served the file on disk, then the
        servers at runtime: /health stayed 503 with HAProxy serving everything)."""
        self.validation_error = self.last_reload_error = None

    def reload_failed(self, error: str, reason: str, retry_in: float) -> None:
        self.last_reload_error = {"at": time.time(), "message": error, "reason": reason,
                                  "retry_in_s": round(retry_in, 1)}  # fmt: skip


def running_backends(reader: RunningReader) -> tuple[dict[str, Any], list[str]]:
    """({backend: {server: {state, weight, address}}}, [unread backend]), sorted.

    Right after synapse reloaded or started HAProxy the view knows the new process's
    backends by name only, until the background sweep (or an apply) reads them (1-2 s
    at 1,000 services): what it holds for them is the previous process's servers, or
    nothing. Those are left out of the servers and listed as unread instead, so /status
    never shows them as what HAProxy runs. (No read here: /status stays cheap.)
    """
    if reader.view is None:
        return {}, []
    unread = reader.unread
    return backend_states(reader.view.backends, unread), sorted(unread)


def backend_states(
    backends: Mapping[str, Mapping[str, RunningServer]], unread: Collection[str] = ()
) -> dict[str, dict[str, dict[str, Any]]]:
    """{backend: {server: {state, weight, address}}}, sorted, without the ``unread``."""
    return {
        backend: {
            name: {"state": s.label, "weight": s.weight, "address": join_host_port(s.addr, s.port)}
            for name, s in sorted(servers.items())
        }
        for backend, servers in sorted(backends.items())
        if backend not in unread
    }


def run_mode(config: HAProxyConfig, managed: ManagedHAProxy | None) -> str:
    """How HAProxy gets new configs, for /status (``managed``: the ManagedHAProxy, if any)."""
    if managed is not None:
        return "managed"
    if config.do_reloads and config.do_writes:
        return "reload_command"
    return "no_reloads"
