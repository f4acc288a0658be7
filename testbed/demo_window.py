"""``make demo``'s slow reload act: a reload that takes seconds does not hold the changes
that come meanwhile.

HAProxy's master is stopped (SIGSTOP: a starved host or a huge config holds a reload as
long) and synapse is given one more service by SIGHUP, a change only a reload can make.
While that reload waits, app-3 is withdrawn (`nerve maint`): synapse puts it into
maintenance in the running worker at once, beside the reload, instead of after it. Then
the master resumes, the reload completes, and the new worker starts without app-3; `nerve
up` brings it back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.process import free_port, wait_until

if TYPE_CHECKING:
    from testbed.demo import Demo

HELD_S = 3.0  # how long HAProxy's master is stopped
NEW_SERVICE = "hello-window"


def _nerve(bin_dir: Path, nerve_config: Path, *args: str) -> None:
    command = [str(bin_dir / "nerve"), *args, "-c", str(nerve_config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"`nerve {' '.join(args)}` failed: {done.stderr.strip()}")


def slow_reload_act(
    demo: Demo,
    bin_dir: Path,
    service: str,
    say: Callable[[str], None],
    detail: Callable[[str], None],
) -> float:
    """The act on ``demo``'s app-3 and ``service``; seconds from `nerve maint` until
    HAProxy took the instance out."""
    assert demo.synapse is not None
    config_path, synapse_pid, status = demo.workdir / "synapse.json", demo.synapse.pid, demo.status
    nerve_config, port = demo.workdir / "nerve-app-3.json", demo.backends["app-3"].port

    def in_rotation() -> bool:
        return demo._in_rotation(port)

    say(f"A reload held {HELD_S:.0f} s (HAProxy's master stopped) while app-3 is withdrawn")
    haproxy = status()["haproxy"]
    master, before = haproxy["haproxy_pids"]["master"], haproxy["reloads"]
    if not in_rotation():
        raise RuntimeError("app-3 is not in rotation before the act")
    config = json.loads(config_path.read_text())
    config["services"][NEW_SERVICE] = {
        **config["services"][service],
        "haproxy": {**config["services"][service]["haproxy"], "port": free_port()},
    }
    began = time.monotonic()
    os.kill(master, signal.SIGSTOP)
    try:
        config_path.write_text(json.dumps(config, indent=2))
        os.kill(synapse_pid, signal.SIGHUP)
        wait_until(lambda: NEW_SERVICE in status()["services"], timeout=10,
                   what="synapse to take the new service", interval=0.05)  # fmt: skip
        time.sleep(0.3)  # (synapse is in the reload now: the master does not answer)
        withdrawn = time.monotonic()
        _nerve(bin_dir, nerve_config, "maint", service, "--reason", "demo: slow reload act")
        wait_until(lambda: not in_rotation(), timeout=HELD_S, what="app-3 out of HAProxy "
                   "while the reload waits", interval=0.005)  # fmt: skip
        out = time.monotonic() - withdrawn
        reloads_meanwhile = status()["haproxy"]["reloads"] - before
        time.sleep(max(0.0, began + HELD_S - time.monotonic()))
    finally:
        os.kill(master, signal.SIGCONT)
    wait_until(lambda: status()["haproxy"]["reloads"] > before, timeout=30,
               what="the reload to complete", interval=0.05)  # fmt: skip
    time.sleep(0.3)  # (the new worker took over)
    still_out = not in_rotation()
    _nerve(bin_dir, nerve_config, "up", service)
    wait_until(in_rotation, timeout=20, what="app-3 back in HAProxy", interval=0.05)
    detail(
        f"app-3 out of HAProxy {out * 1000:.0f} ms after `nerve maint` was run (its own "
        f"start included), while the reload "
        f"waited (reloads completed by then: {reloads_meanwhile}); the reload completed "
        f"{time.monotonic() - began:.1f} s after the master stopped"
    )
    failed = sum(s.backend is None for s in demo.client.since(began))
    detail(
        f"after the reload app-3 {'stayed out' if still_out else 'was BACK in HAProxy'}; "
        f"`nerve up` put it back; failed requests during the act: {failed}"
    )
    if not still_out:
        raise RuntimeError("the new HAProxy worker served the withdrawn app-3")
    return out
