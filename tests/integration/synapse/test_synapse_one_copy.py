"""One synapse per config (smartstack.instance_lock): real synapse processes, managed HAProxy.

A second synapse on the same config reloaded HAProxy against the first (a reload fight:
392-490 of ~450 requests failed, review s26 "two copies overlap"). Now it waits for the
first one's lock and, when that one does not exit, exits 1 with a message, never touching
HAProxy; when the first one stops meanwhile (a restart overlap), it starts. A config that
names a symlink to the first one's HAProxy config meets its lock too (review s27: it took
``<link>.lock`` and ran beside the first).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import yaml
from synapse_e2e import SYNAPSE, Synapse, wait

from smartstack.instance_lock import WAIT_ENV
from testbed.process import ManagedProcess, free_port


def static_service(port: int, backend_port: int) -> dict:
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "s", "host": "127.0.0.1", "port": backend_port}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }


def second_copy(syn: Synapse, wait_s: float, config: Path | None = None) -> ManagedProcess:
    return ManagedProcess(
        [str(SYNAPSE), "-c", str(config or syn.config_path)],
        syn.dir,
        name="synapse-b",
        env={**os.environ, "PYTHONUNBUFFERED": "1", WAIT_ENV: str(wait_s)},
    ).start()


def refused_copy(syn: Synapse, wait_s: float, config: Path | None = None) -> str:
    """A second synapse that must exit 1 (the lock held past its ``wait_s``): its log."""
    other = second_copy(syn, wait_s, config)
    try:
        assert other.wait(60) == 1, other.log_tail()
    finally:
        other.kill()
    return other.log_path.read_text()


def fds_on(pid: int, path: Path) -> list[str]:
    fd_dir = Path(f"/proc/{pid}/fd")
    found = []
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(fd_dir / fd) == str(path):
                found.append(fd)
        except OSError:
            pass  # (closed meanwhile)
    return found


def test_second_synapse_on_one_config_exits_1_and_never_touches_haproxy(http_backend_factory):
    backend = http_backend_factory("a")
    syn = Synapse({"web": static_service(free_port(), backend.port)})
    try:
        syn.start()
        lock = Path(f"{syn.config_path.parent / 'haproxy.cfg'}.lock")
        assert fds_on(syn.process.pid, lock), "synapse holds its instance lock"
        assert lock.read_text().splitlines() == [str(syn.process.pid), str(syn.config_path)]
        for pid in syn.haproxy_pids():  # O_CLOEXEC: HAProxy never holds it
            assert fds_on(pid, lock) == [], f"HAProxy pid {pid} holds the lock"
        reloads, workers = syn.master_reloads(), syn.workers()
        log = refused_copy(syn, 3)
        assert "instance_lock_waiting" in log
        assert f"synapse pid {syn.process.pid} already runs with {syn.config_path}" in log
        assert "haproxy_adopted" not in log and "haproxy_started" not in log
        assert syn.master_reloads() == reloads and syn.workers() == workers
        assert syn.process.alive
    finally:
        syn.cleanup()


def test_second_synapse_starts_once_the_first_exits_during_its_wait(http_backend_factory):
    backend = http_backend_factory("a")
    syn = Synapse({"web": static_service(free_port(), backend.port)})
    other = None
    try:
        syn.start()
        other = second_copy(syn, 60)
        wait(lambda: "instance_lock_waiting" in other.log_path.read_text(), 30,
             what="the second synapse waiting for the lock")  # fmt: skip
        assert other.alive and syn.process.alive
        syn.signal(signal.SIGTERM)
        assert syn.process.wait(30) == 0
        wait(lambda: "instance_lock_taken" in other.log_path.read_text(), 40,
             what="the second synapse taking the lock")  # fmt: skip
        wait(lambda: syn.status()["reconciler"]["applies"] > 0, 30, what="it serves")
        assert other.alive
    finally:
        if other is not None:
            other.stop(timeout=20)
        syn.cleanup()


def test_a_config_naming_a_symlink_to_the_haproxy_config_meets_its_lock(http_backend_factory):
    backend = http_backend_factory("a")
    syn = Synapse({"web": static_service(free_port(), backend.port)})
    try:
        syn.start()
        real = syn.dir / "haproxy.cfg"
        link = syn.dir / "current.cfg"
        link.symlink_to(real)
        linked = {**syn.config, "haproxy": {**syn.config["haproxy"], "config_file_path": str(link)}}
        config = syn.dir / "linked.yaml"
        config.write_text(yaml.safe_dump(linked))
        reloads = syn.master_reloads()
        assert f"(lock {real}.lock)" in refused_copy(syn, 2, config)
        assert link.is_symlink() and syn.master_reloads() == reloads  # it touched nothing
        assert syn.process.alive
    finally:
        syn.cleanup()
