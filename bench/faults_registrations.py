"""Fault scenarios where nerve itself restarts or is reconfigured (bench/faults.py's suite).

A healthy instance must stay in HAProxy through them: a nerve killed and started again
(an OOM kill, a crash, an upgrade's restart) finds its previous registration still valid
and keeps it until its checks decide; a SIGHUP that changes the record writes the new
registration before the old one goes. Besides the failed requests (the other instance
serves meanwhile, so they stay 0 either way) these report how long the instance was out of
HAProxy, polled every POLL_S on synapse's admin socket by a thread of its own.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.faults import ETCD_LEASE_S, SERVICE, FaultStack, Figures, send
from bench.haproxy import Address, BackendPoller
from bench.stack import Nerve

POLL_S = 0.005
RESTART_SETTLE_S = 3.0  # after the restart: past rise x check_interval (2 x 0.5 s)
DEFAULT_LEASE_S = 5  # nerve's default etcd_lease_ttl


class OutOfHAProxy:
    """The longest time each wanted server was not served by HAProxy, while running."""

    def __init__(self, stack: FaultStack) -> None:
        self.want = set(stack.want)
        self.poller = BackendPoller(stack.synapse.dir / "admin.sock", SERVICE, timeout=2.0)
        self.longest: dict[Address, float] = dict.fromkeys(self.want, 0.0)
        self._since: dict[Address, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="out-of-haproxy", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                serving = self.poller.serving()
            except OSError:
                continue  # (a reload closed the admin connection: the next poll opens one)
            now = time.perf_counter()
            for address in self.want:
                if address in serving:
                    began = self._since.pop(address, None)
                    if began is not None:
                        self.longest[address] = max(self.longest[address], now - began)
                else:
                    self._since.setdefault(address, now)

    @property
    def worst_s(self) -> float:
        now = time.perf_counter()
        open_gaps = [now - began for began in self._since.values()]
        return max([*self.longest.values(), *open_gaps], default=0.0)

    @contextmanager
    def watching(self) -> Iterator[OutOfHAProxy]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)
            self.poller.close()


def _report(figures: Figures, out: OutOfHAProxy, what: str) -> None:
    figures.out_of_haproxy_s = out.worst_s
    figures.notes.append(
        f"{what}; the longest a healthy instance was out of HAProxy: {out.worst_s:.3f} s "
        f"(polled every {POLL_S * 1000:.0f} ms; the other instance served meanwhile)"
    )


def _reconfigure(nerve: Nerve, **changes: object) -> None:
    """Set (None: remove) keys of the nerve's service and SIGHUP it; a later start() of
    the same nerve runs this config too."""
    service = nerve.config["services"][SERVICE]
    for key, value in changes.items():
        if value is None:
            service.pop(key, None)
        else:
            service[key] = value
    nerve.config_path.write_text(json.dumps(nerve.config, indent=1))
    assert nerve.proc is not None
    send(nerve.proc.pid, signal.SIGHUP)


def _reconfigure_on_new_lease(nerve: Nerve, timeout: float = 30.0, **changes: object) -> None:
    """_reconfigure, then wait until nerve has put its key on the new lease. A fixed 1.5 s
    was too short at load 20: the kill came before the hand-over, and the registration
    went with the old 2 s lease (out of HAProxy 8-9 s)."""
    assert nerve.proc is not None
    log = nerve.proc.log_path
    before = log.read_text(errors="replace").count("etcd_key_put")
    _reconfigure(nerve, **changes)
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count("etcd_key_put") <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no key put on a new lease in {timeout:.0f} s:\n{nerve.logs()}")
        time.sleep(0.05)


def nerve_kill9_restart(stack: FaultStack, quick: bool) -> Figures:
    """kill -9 one nerve and start it again at once: its registration was still valid
    (the session or lease outlives the process for a while), so it is kept, not deleted
    and registered again after `rise` checks. The suite's etcd nerves run the shortest
    lease (2 s, for the expiry scenario): less than a nerve's start takes on a loaded
    2-core machine (1.2-2.1 s measured), so this one runs nerve's default lease meanwhile."""
    figures = Figures(f"nerve kill -9 + restart ({stack.kind})")
    nerve = stack.nerves[0]
    lease = stack.kind == "etcd"
    if lease:
        _reconfigure_on_new_lease(nerve, etcd_lease_ttl=DEFAULT_LEASE_S)
    out = OutOfHAProxy(stack)
    with stack.window(figures), out.watching():
        assert nerve.proc is not None
        nerve.proc.kill()
        nerve.start()
        time.sleep(RESTART_SETTLE_S)
    if lease:
        _reconfigure_on_new_lease(nerve, etcd_lease_ttl=ETCD_LEASE_S)
    what = "nerve killed and started again at once, its service healthy"
    _report(figures, out, what + (f", etcd_lease_ttl {DEFAULT_LEASE_S} s" if lease else ""))
    return figures


def nerve_sighup_record(stack: FaultStack, quick: bool) -> Figures:
    """A SIGHUP that changes the record (the weight): the new registration is written
    before the old one goes, so the instance never leaves HAProxy."""
    figures = Figures(f"nerve SIGHUP changing the weight ({stack.kind})")
    nerve = stack.nerves[0]
    before = nerve.config["services"][SERVICE].get("weight")
    out = OutOfHAProxy(stack)
    with stack.window(figures), out.watching():
        for weight in (7, before):
            _reconfigure(nerve, weight=weight)
            time.sleep(1.5)
    _report(figures, out, f"weight {before} -> 7 -> {before} by SIGHUP")
    return figures
