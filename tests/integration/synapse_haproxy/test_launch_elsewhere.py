"""``managed.launch: false`` against a real HAProxy run by the image's entrypoint
(docker/entrypoint.sh ``haproxy-wait``, as in its own container: synapse.haproxy.elsewhere):
synapse writes the config, waits for the master, adopts and reloads it, never starts one,
leaves it serving when it stops (even with ``stop_on_exit: true``), and a new synapse adopts
it. A crashed HAProxy is started again by the script, and synapse adopts the new master.
(The layout in containers: tests/system/docker/test_docker_haproxy_container.py.)"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
from pathlib import Path

from haproxy_helpers import eventually, serves, web

from synapse.contract import ApplyOutcome
from synapse.haproxy.pids import pid_alive
from testbed.process import free_port

ENTRYPOINT = Path(__file__).resolve().parents[3] / "docker" / "entrypoint.sh"
ELSEWHERE = {"launch": False, "stats": {"enabled": False}, "stop_on_exit": True}


def _haproxy_wait(config: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HAPROXY_CONFIG=str(config))
    return subprocess.Popen(["sh", str(ENTRYPOINT), "haproxy-wait"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


async def test_synapse_adopts_and_reloads_an_haproxy_it_never_starts(
    managed_factory, http_backend_factory, sockdir: Path, caplog
) -> None:
    b1, b2 = http_backend_factory("b1"), http_backend_factory("b2")
    port = free_port()
    script = _haproxy_wait(sockdir / "haproxy.cfg")  # (before synapse: it waits for the file)
    try:
        first = managed_factory(managed=ELSEWHERE)
        await first.start()
        with caplog.at_level(logging.INFO, logger="synapse.haproxy.managed"):
            assert (await first.apply([web(port, [b1])], "start")).reload is ApplyOutcome.DONE
        await serves(port, {"b1"})
        events = [r.message for r in caplog.records]
        assert "haproxy_waiting" in events and "haproxy_adopted" in events
        assert "haproxy_started" not in events  # (the script started it)
        master = first._managed.master_pid
        assert master is not None and master != script.pid  # (HAProxy, the script's child)

        assert (await first.apply([web(port, [b1, b2])], "add")).reload is not ApplyOutcome.FAILED
        await serves(port, {"b1", "b2"})
        await first.stop()  # stop_on_exit true: does not apply
        assert pid_alive(master)
        await serves(port, {"b1", "b2"})

        second = managed_factory(managed=ELSEWHERE)
        await second.start()  # adopts it
        assert second._managed.master_pid == master
        os.kill(master, signal.SIGKILL)  # a crash: the script starts it again from the file

        async def readopted() -> bool:
            pid = second._managed.master_pid
            return pid not in (None, master) and second._managed.alive

        await eventually(readopted, "the restarted master adopted")
        await serves(port, {"b1", "b2"})
        await second.stop()
        assert second._managed.master_pid is None and script.poll() is None
    finally:
        os.killpg(script.pid, signal.SIGTERM)  # the script's hard stop of HAProxy
        await asyncio.to_thread(script.wait, 10)
