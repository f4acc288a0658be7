"""``make demo``'s panic act: every server fails HAProxy's check at once, and none is dead.

hello's HAProxy checks ``GET /ready`` every second (timeout: the 1 s ``inter``). The act
makes ``/ready`` wait on a shared dependency gone slow (SLOW_S on every app) while the apps
still answer requests and their nerves' own checks (``/health``) pass. HAProxy marks the
three servers DOWN, one check after another; at the last it has no server, and before it
answered every request with a 503 until the checks passed again. synapse reads HAProxy's
"no server available" alert, sees that the checks timed out (slow, not refused), and puts
the servers back with their checks paused for ``panic_hold_ms`` (the demo's: HOLD_MS); the
requests of the milliseconds in between wait for a server (``wait_for_server_ms``: 1 s by
default for a service HAProxy checks, as hello). Then
``/ready`` is fast again, the hold ends and the checks resume (synapse.haproxy.panic).
Without the panic (``panic: false``, one run): 7 requests failed, each after its 1 s wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from testbed.haproxy import parse_servers_state, runtime_command
from testbed.process import wait_until

if TYPE_CHECKING:
    from testbed.demo import Demo

SLOW_S = 1.5  # /ready's answer: longer than the check's 1 s timeout
HOLD_MS = 3000  # hello's health_check.panic_hold_ms in the demo's synapse config
WAIT_S = 1.0  # hello's wait_for_server_ms (its default: HAProxy checks hello), in seconds
TRAFFIC_S = 2.0  # the client's requests counted while the panic holds
UP, CHECKED = 2, 6  # srv_op_state running; srv_check_state configured + enabled


def _servers(demo: Demo, service: str) -> list[dict[str, Any]]:
    state = runtime_command(demo.workdir / "haproxy" / "admin.sock", "show servers state")
    return [row for row in parse_servers_state(state) if row.get("be_name") == service]


def _checked_and_up(demo: Demo, service: str) -> bool:
    rows = _servers(demo, service)
    return bool(rows) and all(
        int(row["srv_op_state"]) == UP and int(row["srv_check_state"]) == CHECKED for row in rows
    )


def _panic(demo: Demo) -> dict[str, Any]:
    return demo.status()["haproxy"]["panic"]


def panic_act(
    demo: Demo, service: str, say: Callable[[str], None], detail: Callable[[str], None]
) -> int:
    """Slow every app's /ready until synapse's panic, then heal; the requests that failed."""
    say(f"A shared dependency turns slow: every app's /ready (HAProxy's check) takes {SLOW_S} s")
    wait_until(lambda: _checked_and_up(demo, service), timeout=30, interval=0.1,
               what=f"{service}'s servers UP with their checks on")  # fmt: skip
    reloads, panics = demo.haproxy_reloads(), _panic(demo)["panics"]
    slowed = time.monotonic()
    for backend in demo.backends.values():
        backend.ready_delay = SLOW_S
    wait_until(lambda: _panic(demo)["panics"] > panics, timeout=30, interval=0.02,
               what="synapse's panic (HAProxy's checks to time out on every server)")  # fmt: skip
    began = time.monotonic() - slowed
    held = _panic(demo)["backends"].get(service, {}).get("servers", [])
    detail(f"HAProxy's checks timed out on all {len(held)} servers; {began:.1f} s after the "
           f"slowdown HAProxy had none left, and synapse put them back with their checks "
           f"paused for {HOLD_MS / 1000:.0f} s (nerve's own checks still pass)")  # fmt: skip
    time.sleep(TRAFFIC_S)
    for backend in demo.backends.values():
        backend.ready_delay = 0.0
    wait_until(lambda: service not in _panic(demo)["backends"], timeout=30, interval=0.1,
               what="the panic's hold to end")  # fmt: skip
    wait_until(lambda: _checked_and_up(demo, service), timeout=30, interval=0.1,
               what=f"{service}'s checks to pass again")  # fmt: skip
    samples = demo.client.since(slowed)
    failed = sum(1 for s in samples if s.backend is None)
    slowest = max((s.answered - s.at for s in samples if s.backend), default=0.0)
    detail(f"/ready fast again: the hold ended, the checks resumed and passed; requests "
           f"since the slowdown {len(samples) - failed} served, {failed} failed, the slowest "
           f"{slowest:.2f} s (without the panic each request from the third DOWN until the "
           f"checks passed waited its {WAIT_S:.0f} s for a server, then got a 503)")  # fmt: skip
    detail(f"panic act: failed requests {failed}, HAProxy reloads "
           f"{demo.haproxy_reloads() - reloads}")  # fmt: skip
    return failed
