"""HAProxy's readiness check times out on every server at once, and none is dead.

For this scenario the suite's ``web`` service gets HAProxy's own HTTP check on ``GET
/ready`` (``health_check``: every second, its timeout the 1 s ``inter``, ``rise 2 fall
2``) and ``wait_for_server_ms`` (docs/synapse-haproxy.md: set it for a service whose
checks may all fail at once). Then every backend's ``/ready`` answers after 1.5 s
(bench/backend.py, SIGUSR1: a dependency they share gone slow) while ``/`` and nerve's
``/health`` stay fast, for the panic's hold and SLOW_AFTER_S past it: HAProxy's checks
mark both servers DOWN; synapse's panic puts them back for ``panic_hold_ms``; the hold
ends while ``/ready`` is still slow, the checks mark them DOWN again and the next panic
starts. Then ``/ready`` is fast again (SIGUSR2) and the checks pass. Without the panic
(``panic: false``) HAProxy has no server from the second DOWN until the checks pass.
The service's config is the suite's again after the scenario (one SIGHUP each way,
outside the load window).
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from bench.backend import READY_SLOW_S
from bench.faults import SERVICE, FaultStack, Figures, send, timed
from bench.stack import wait_for

INTER_MS = 1000  # HAProxy's check every second; its timeout: the same (no `timeout check`)
HOLD_MS = 3000  # health_check.panic_hold_ms (the minimum is 1000)
WAIT_MS = 1000  # wait_for_server_ms: the requests of the alert's milliseconds wait
SLOW_AFTER_S = HOLD_MS / 1000 + 3  # /ready slow past the first hold: the checks run again
UP, CHECKED = 2, 6  # srv_op_state running; srv_check_state configured + enabled


def _checked_config(config: dict[str, Any], panic: bool) -> dict[str, Any]:
    checked = json.loads(json.dumps(config))
    haproxy = checked["services"][SERVICE]["haproxy"]
    haproxy["health_check"] = {
        "enabled": True, "path": "/ready", "inter_ms": INTER_MS, "rise": 2, "fall": 2,
        "panic": panic, "panic_hold_ms": HOLD_MS,
    }  # fmt: skip
    haproxy["wait_for_server_ms"] = WAIT_MS
    return checked


def _checks(stack: FaultStack) -> set[tuple[int, int]]:
    """(op state, check state) of the backend's servers."""
    rows = stack.synapse.haproxy.servers(SERVICE)
    return {(int(r["srv_op_state"]), int(r["srv_check_state"])) for r in rows}


def _panic(stack: FaultStack) -> dict[str, Any]:
    return json.loads(stack.synapse.get("/status"))["haproxy"]["panic"]


def _apply(stack: FaultStack, config: dict[str, Any], done: Any, what: str) -> None:
    stack.synapse.config_path.write_text(json.dumps(config, indent=1))
    send(stack.synapse.pid, signal.SIGHUP)
    wait_for(done, 60, what, [stack.synapse.proc], interval=0.05)


def _slow_ready(stack: FaultStack, slow: bool) -> None:
    for backend in stack.backends:
        assert backend.proc is not None
        send(backend.proc.pid, signal.SIGUSR1 if slow else signal.SIGUSR2)


def checks_all_timeout(panic: bool = True) -> Any:
    """The scenario (``panic``: the service's ``health_check.panic``)."""

    def scenario(stack: FaultStack, quick: bool) -> Figures:
        title = "every server's HAProxy check timing out (slow /ready)"
        figures = Figures(
            title + ("" if panic else ", panic: false"),
            recover_what="/ready fast to the checks passing on both",
            expect_zero=panic,
        )
        good = json.loads(stack.synapse.config_path.read_text())
        _apply(stack, _checked_config(good, panic), lambda: _checks(stack) == {(UP, CHECKED)},
               "both servers UP with HAProxy's checks on")  # fmt: skip
        panics = _panic(stack)["panics"]
        try:
            with stack.window(figures):
                _slow_ready(stack, True)
                slowed = time.perf_counter()
                # the panic, or (panic: false) HAProxy with no server left
                wait_for(lambda: _panic(stack)["panics"] > panics or not stack.serving(), 30,
                         "every server's check to time out", interval=0.02)  # fmt: skip
                all_down_s = time.perf_counter() - slowed
                time.sleep(SLOW_AFTER_S)
                _slow_ready(stack, False)
                figures.recover_s = timed(
                    lambda: (
                        SERVICE not in _panic(stack)["backends"]
                        and _checks(stack) == {(UP, CHECKED)}
                    ),
                    30,
                    "the hold over and both servers' checks passing",
                )
        finally:
            _slow_ready(stack, False)
            _apply(stack, good, lambda: CHECKED not in {c for _, c in _checks(stack)},
                   "the suite's config back (no HAProxy checks)")  # fmt: skip
        held = _panic(stack)["panics"] - panics
        figures.extra["synapse panics"] = (held, "")
        figures.extra["slowest answered request"] = (round(figures.slowest_s, 3), "s")
        figures.notes.append(
            f"HAProxy checks GET /ready every {INTER_MS} ms (timeout {INTER_MS} ms, rise 2 "
            f"fall 2); every backend's /ready answered in {READY_SLOW_S} s for "
            f"{all_down_s + SLOW_AFTER_S:.1f} s, nerve's /health fast; no server left "
            f"{all_down_s:.1f} s after the slowdown; panic {'on' if panic else 'off'}, hold "
            f"{HOLD_MS} ms, wait_for_server_ms {WAIT_MS}: {held} panics; the slowest "
            f"answered request {figures.slowest_s:.3f} s"
        )
        return figures

    return scenario
