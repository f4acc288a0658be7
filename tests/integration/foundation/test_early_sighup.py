"""A SIGHUP while a daemon starts does not kill it (smartstack.early_signals).

Before the event loop installs its handler, SIGHUP's default action ends a process: a deploy
that restarts nerve or synapse and then reloads it (``systemctl restart x && systemctl
reload x``) killed it in its first second, and systemd counts that as a clean exit. Real
processes get a SIGHUP every 50 ms for 1.5 s from the moment they forked the child that
validates their config: each must come up and serve. (The old code died from the first.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import (
    NerveProcess,
    children,
    nerve_config,
    unique_path,
    write_config,
    zk_service,
)
from synapse_e2e import Synapse

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

STORM_S, EVERY_S = 1.5, 0.05
EXECED_S = 30  # at most, for Docker mode's exec and the new program's hold of SIGHUP
# Docker mode's exec sets it (nerve.config_load.IN_PROCESS_ENV): /proc/PID/environ shows it
# once the process runs the new program.
EXECED = b"NERVE_CONFIG_IN_PROCESS=1"


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def sighup_storm(pid: int, execs: bool = False) -> None:
    """SIGHUPs every EVERY_S from the moment the daemon has forked the child that validates
    its config (its first second: the old code had no handler then, and died), until STORM_S
    after the program that runs the daemon catches SIGHUP. With ``execs`` (Docker mode) that
    is the program it execs after the child's answer: the storm goes on through the exec
    and the new program's start, however long the first program took (3-5 s at load 19,
    where a storm of STORM_S from the fork ended before the exec, and no SIGHUP reached the
    new program: a noted one does not cross the exec, the new program reads the file anew)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    wait_until(lambda: children.read_text().split(), 20, interval=0.002,
               what="the config's validating child")  # fmt: skip
    started = time.monotonic()
    caught_at = None if execs else started  # (the plain daemon held SIGHUP before the fork)
    while caught_at is None or time.monotonic() < caught_at + STORM_S:
        try:
            os.kill(pid, signal.SIGHUP)
            time.sleep(EVERY_S)
            status, environ = _status(pid), Path(f"/proc/{pid}/environ").read_bytes()
        except (ProcessLookupError, FileNotFoundError):
            return  # dead (the old code): the checks that follow say so
        if status["State"].startswith("Z") or time.monotonic() > started + EXECED_S:
            return  # dead, or no exec after all: the checks that follow say which
        held = int(status["SigCgt"], 16) & 1 << (signal.SIGHUP - 1)
        if caught_at is None and held and EXECED in environ:
            caught_at = time.monotonic()  # the new program holds SIGHUP: STORM_S more


@pytest.mark.parametrize("docker_mode", [False, True], ids=["plain", "docker-mode"])
def test_nerve_lives_through_sighups_from_its_first_moment(
    zk: ZooKeeperServer, tmp_path: Path, docker_mode: bool
) -> None:
    """Docker mode starts itself again (exec) after its config's child: a second window."""
    path = unique_path()
    config = nerve_config({"web": zk_service(zk.hosts, path, 7001, checks=[])})
    if docker_mode:  # (an engine that is not there: the source keeps trying, nerve runs)
        defaults = {"zk_hosts": [zk.hosts], "zk_path": path}
        config["docker"] = {"url": f"unix://{tmp_path}/no.sock", "service_defaults": defaults}
    nerve = NerveProcess(write_config(tmp_path / "nerve.json", config), tmp_path).start()
    try:
        sighup_storm(nerve.pid, execs=docker_mode)
        kz = KazooClient(hosts=zk.hosts)
        kz.start(timeout=20)
        try:
            wait_until(lambda: nerve.process.check_alive() or children(kz, path), 20,
                       what=f"nerve registered\n{nerve.log()[-3000:]}")  # fmt: skip
        finally:
            kz.stop()
            kz.close()
        # (a SIGHUP noted at start is applied once: by a config child, ~0.3 s, or more
        # under load, after the registration)
        wait_until(lambda: nerve.process.check_alive() or "config_reloaded" in nerve.log(), 20,
                   what=f"the SIGHUPs applied\n{nerve.log()[-3000:]}")  # fmt: skip
    finally:
        nerve.process.stop(timeout=10)


def test_synapse_lives_through_sighups_from_its_first_moment(zk: ZooKeeperServer) -> None:
    service = {"discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": unique_path()},
               "haproxy": {"port": free_port(), "bind_address": "127.0.0.1"}}  # fmt: skip
    syn = Synapse({"web": service})
    try:
        syn.process.start()
        sighup_storm(syn.process.pid)
        wait_until(syn._applied, 30, what=f"synapse to configure HAProxy\n{syn.log()}")
        assert syn.process.alive
    finally:
        syn.cleanup()
