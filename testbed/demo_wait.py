"""``make demo``'s wait act: a request with no usable server waits for one, not a 503.

In the zone act's ``shop`` (synapse in az1): az1 is evacuated through synapse's zone API (its
servers stay, at weight 0) and az2 and az3, HAProxy's backups, serve; then their servers
die. HAProxy has no server with a weight until synapse's next look gives az1 its weights
back: before, every request meanwhile was a 503; now each waits in the backend's Lua action
(``wait_for_server_ms``, 1000 ms by default in managed mode) and az1 answers it. Then az2
and az3 come back and az1 is restored. Counted from the clients' answers and /status.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.demo_client import Client, failure_kinds
from testbed.demo_zones import LAYOUT, LOCAL, SERVICE
from testbed.process import wait_until

if TYPE_CHECKING:
    from testbed.demo import Demo

CLIENTS = 10  # more than the 6 dying servers: some requests arrive once all are DOWN
HELD_S = 0.02  # an answer slower than this waited (a server on 127.0.0.1 answers in ~1 ms)
TURN_S = 0.9  # HAProxy retries a refused connection after its 1 s turn-around


def _zones(demo: Demo, action: str) -> None:
    """POST /zones/<LOCAL>/<action>?service=shop on synapse's admin API."""
    url = f"http://127.0.0.1:{demo.synapse_admin_port}/zones/{LOCAL}/{action}?service={SERVICE}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5):
        pass


def _up(demo: Demo) -> dict[str, int]:
    """Usable servers per zone of ``shop``, as synapse's /status says."""
    zones = demo.status()["services"][SERVICE]["zones"]["zones"]
    return {zone: int(zones.get(zone, {}).get("usable") or 0) for zone in LAYOUT}


def _all_usable(demo: Demo, what: str) -> None:
    wait_until(lambda: _up(demo) == LAYOUT, timeout=30, interval=0.1, what=what)


def _span(seconds: list[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f} s" if seconds else "none"


def wait_act(demo: Demo, say: Callable[[str], None], detail: Callable[[str], None]) -> int:
    """Strand ``shop`` (az1 evacuated, the others die), then put it back; failed requests."""
    say(f"No usable server: {SERVICE}'s requests wait for one (wait_for_server_ms), not a 503")
    zones, reloads = demo.zones, demo.haproxy_reloads()
    spill = set(LAYOUT) - {LOCAL}
    _all_usable(demo, f"every server of {SERVICE} usable")
    clients = [Client(zones.port) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    _zones(demo, "evacuate")
    zones.until(clients[0], spill, time.monotonic())
    detail(f"{LOCAL} evacuated (POST /zones/{LOCAL}/evacuate): {' and '.join(sorted(spill))} "
           f"serve as HAProxy's backups, {LOCAL}'s servers wait at weight 0")  # fmt: skip
    stopped = time.monotonic()
    for zone in sorted(spill):
        for backend in zones.backends[zone]:
            backend.stop()
    zones.until(clients[0], {LOCAL}, stopped)
    mode = demo.status()["services"][SERVICE]["zones"]["mode"]
    time.sleep(1.0)  # the requests in flight at the stop are answered by then (2 s at most)
    for client in clients:
        client.stop()
    after = [s for c in clients for s in c.samples if s.answered >= stopped]
    failed = sum(1 for s in after if s.backend is None)
    took = min(s.answered for s in after if s.backend and s.backend.startswith(LOCAL)) - stopped
    waits = [s.answered - s.at for s in after if s.backend]
    held = [w for w in waits if HELD_S < w < TURN_S]
    retried = [w for w in waits if w >= TURN_S]
    detail(f"{' and '.join(sorted(spill))} die: synapse gave {LOCAL} its weights back (mode "
           f"{mode}), {LOCAL}'s first answer {took:.2f} s after the stop")  # fmt: skip
    detail(f"{CLIENTS} clients, {len(after)} requests answered since the stop: {failed} failed"
           f"{failure_kinds(after)}; "
           f"{len(held)} waited for a server in HAProxy ({_span(held)}), {len(retried)} met a "
           f"dying server, retried after HAProxy's turn-around ({_span(retried)})")  # fmt: skip
    for zone in sorted(spill):
        for backend in zones.backends[zone]:
            backend.start()
    _zones(demo, "restore")
    _all_usable(demo, f"every server of {SERVICE} usable again")
    detail(f"{' and '.join(sorted(spill))} back, {LOCAL} restored: "
           f"{', '.join(f'{z} {n}' for z, n in _up(demo).items())} usable servers")  # fmt: skip
    detail(
        f"wait act: failed requests {failed}, HAProxy reloads {demo.haproxy_reloads() - reloads}"
    )
    return failed
