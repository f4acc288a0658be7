"""``make demo``'s typo act: a SIGHUP whose config misspells the service's etcd prefix.

The file is valid (no validator can know the prefix is wrong), and the new prefix lists no
server. synapse does not swap the service onto it: it keeps following the old prefix, says
why on /health (``degraded``) and /status, and swaps once the file is fixed. Before, the
service followed the empty prefix: every request failed (with ``use_previous_backends:
false``) or the servers froze, no longer following the registry.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from testbed.process import wait_until

if TYPE_CHECKING:
    from testbed.demo import Demo

TRAFFIC_S = 2.0  # how long the typo is left in place, under the client's traffic


def _health(demo: Demo) -> dict:
    url = f"http://127.0.0.1:{demo.synapse_admin_port}/health"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def typo_act(
    demo: Demo, service: str, say: Callable[[str], None], detail: Callable[[str], None]
) -> int:
    """Misspell the prefix by SIGHUP, then fix it; the requests that failed meanwhile."""
    assert demo.synapse is not None
    path = demo.workdir / "synapse.json"
    good = path.read_text()
    config = json.loads(good)
    right = config["services"][service]["discovery"]["path"]
    wrong = right.replace("smartstack", "smartstak")
    say(f"A typo by SIGHUP: {service}'s etcd prefix {right} misspelled {wrong}")
    config["services"][service]["discovery"]["path"] = wrong
    started, reloads = time.monotonic(), demo.haproxy_reloads()
    path.write_text(json.dumps(config, indent=2))
    os.kill(demo.synapse.pid, signal.SIGHUP)

    def held() -> bool:
        return bool(demo.status()["services"][service]["watcher"].get("replacing", {}).get("empty"))

    wait_until(held, timeout=20, what="synapse to hold the old prefix", interval=0.05)
    time.sleep(TRAFFIC_S)
    said = _health(demo).get("degraded") or ["(nothing)"]
    detail(f"/health says: {said[0]}")
    path.write_text(good)
    os.kill(demo.synapse.pid, signal.SIGHUP)
    wait_until(lambda: not held(), timeout=20, what="the fixed file to apply", interval=0.05)
    failed = sum(1 for s in demo.client.since(started) if s.backend is None)
    served = {s.backend for s in demo.client.since(started) if s.backend}
    detail(f"meanwhile every app kept serving ({', '.join(sorted(served))})")
    detail(
        f"typo act: failed requests {failed}, HAProxy reloads {demo.haproxy_reloads() - reloads}"
    )
    return failed
