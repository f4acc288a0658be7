"""``make demo``'s reload act: a change only a reload can make (one more service, given to
synapse by SIGHUP) while clients keep connections open, idle between requests, as pools and
load balancers in front do. HAProxy's old worker would close those connections at once; the
next request on each would get no answer (a 502 behind an ALB). synapse gives managed HTTP
frontends ``option idle-close-on-response``: the old worker answers that request, then
closes the connection."""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from testbed.process import free_port, wait_until

KEPT_ALIVE = 8  # client connections held open through the reload
NEW_SERVICE = "hello-canary"


def _ask(conn: http.client.HTTPConnection) -> bool:
    """One GET / on ``conn`` (kept open afterwards unless the server closes it)."""
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def reload_act(
    config_path: Path,
    synapse_pid: int,
    front_port: int,
    service: str,
    reloads: Callable[[], int],
    say: Callable[[str], None],
    detail: Callable[[str], None],
) -> int:
    """Reload HAProxy under kept-alive clients; the requests that failed on them."""
    say(f"A reload while {KEPT_ALIVE} clients keep connections open (a new service by SIGHUP)")
    conns = [
        http.client.HTTPConnection("127.0.0.1", front_port, timeout=5) for _ in range(KEPT_ALIVE)
    ]
    try:
        if not all(_ask(conn) for conn in conns):
            raise RuntimeError("the kept-alive clients got no first answer")
        before = reloads()
        config = json.loads(config_path.read_text())
        config["services"][NEW_SERVICE] = {
            **config["services"][service],
            "haproxy": {**config["services"][service]["haproxy"], "port": free_port()},
        }
        config_path.write_text(json.dumps(config, indent=2))
        os.kill(synapse_pid, signal.SIGHUP)
        wait_until(lambda: reloads() > before, timeout=30, what="the reload", interval=0.05)
        time.sleep(0.3)  # (the old worker has soft-stopped: it closes what it closes)
        answered = sum(_ask(conn) for conn in conns)
    finally:
        for conn in conns:
            conn.close()
    failed = KEPT_ALIVE - answered
    detail(f"synapse added '{NEW_SERVICE}' (HAProxy reloads: {reloads() - before})")
    detail(
        f"the next request on each kept-alive connection: {answered} answered, {failed} "
        "failed (the old HAProxy worker answered, then closed the connection)"
    )
    return failed
