"""synapse starts, and serves, while a directory it writes is on a read-only filesystem.

The running daemon survives a read-only disk as it does a full one (runtime changes, writes
retried), so a start must too (review s29). Before: the start's path check exited 2 ("...
is on a read-only filesystem") when the state file's, the server-state file's or the config
file's directory was read-only; restarted so (`synapse -k` as the unit's ExecStartPre, or
the start itself), a left-running HAProxy kept its old servers: 891 of 891 requests 503
after a redeploy. A wrong path (below a file) still stops the start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
from read_only_mount import read_only, require_private_mounts
from synapse_e2e import Synapse, wait_serving

from synapse.haproxy.installer import DISK_RETRY_S
from testbed.httpbackend import HttpBackend
from testbed.process import ManagedProcess, free_port, wait_until


@pytest.fixture
def backend() -> Iterator[HttpBackend]:
    server = HttpBackend("b1").start()
    yield server
    server.stop()


def synapse_with_state_dir(backend: HttpBackend, port: int) -> Synapse:
    service = {
        "discovery": {"method": "base"},
        "default_servers": [{"name": "b1", "host": "127.0.0.1", "port": backend.port}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }
    syn = Synapse({"web": service}, startup_wait=0)
    state = syn.dir / "state"
    state.mkdir()
    syn.config["haproxy"]["state_file_path"] = str(state / "synapse-state.json")
    syn.config["haproxy"]["server_state_file"] = str(state / "server-state")
    syn.write_config()
    return syn


def test_synapse_starts_and_serves_with_its_state_dir_read_only(backend: HttpBackend) -> None:
    require_private_mounts()
    port = free_port()
    syn = synapse_with_state_dir(backend, port)
    state = syn.dir / "state"
    argv, env = read_only(syn.process.args, keep=[state]), syn.process.env
    syn.process = ManagedProcess(argv, syn.dir, "synapse", env)
    syn.start()
    wait_serving(port, {"b1"})
    log = syn.log(200)
    assert "event=start_path_unwritable key=haproxy.state_file_path" in log, log
    assert f"path={state}/synapse-state.json error=EROFS" in log
    assert "key=haproxy.server_state_file" in log
    assert "event=state_file_write_failed" in log  # (retried at runtime, as on a full disk)
    health = json.loads(health_answer(syn))  # (200: served; the file's lag is said)
    assert health["ok"] and any(
        f"{state}/synapse-state.json not written" in line and "EROFS" in line
        for line in health["degraded"]
    ), health
    assert not list(state.iterdir())  # nothing got written there
    syn.signal(signal.SIGTERM)
    assert syn.process.wait(15) == 0


def test_a_wrong_path_still_stops_the_start(backend: HttpBackend, tmp_path) -> None:
    syn = synapse_with_state_dir(backend, free_port())
    blocker = syn.dir / "file"
    blocker.write_text("x")
    syn.config["haproxy"]["state_file_path"] = str(blocker / "state.json")
    syn.write_config()
    syn.process.start()
    assert syn.process.wait(30) == 2
    assert f"{blocker} is not a directory" in syn.log(50)


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own (root only: flipped read-only and back from outside synapse)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs and remount it read-only and back")
    run = Path(tempfile.mkdtemp(prefix="synrun-"))  # (short: unix socket paths)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(run)])
    if mounted.returncode != 0:
        pytest.skip("mount -t tmpfs failed (a container without CAP_SYS_ADMIN?)")
    yield run
    subprocess.run(["umount", "-l", str(run)])
    run.rmdir()


def health_answer(syn: Synapse) -> str:
    try:
        return syn.admin("/health")
    except urllib.error.HTTPError as err:  # (503: not ok)
        return err.read().decode()


def remount(directory: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(directory)], check=True)


def writable_then_served(syn: Synapse, run_dir: Path, port: int) -> None:
    """``run_dir`` writable again: ``port`` is served within seconds (not the backoff's
    minute); then synapse stops."""
    remount(run_dir, "rw")
    began = time.monotonic()
    wait_serving(port, {"b1"})
    assert time.monotonic() - began < DISK_RETRY_S + 8  # (its retries' cap, HAProxy's start)
    syn.signal(signal.SIGTERM)
    assert syn.process.wait(15) == 0


@pytest.mark.long
def test_haproxy_starts_within_seconds_of_its_socket_dir_writable_again(
    backend: HttpBackend, run_dir: Path
) -> None:
    """HAProxy cannot start while its socket directory is read-only (it cannot make its
    master socket): synapse runs on, says why on /health, and starts it as soon as it can,
    retrying every few seconds (before: exit 2; under the unit's Restart=always, again and
    again)."""
    port = free_port()
    syn = synapse_with_state_dir(backend, port)
    syn.master_socket = run_dir / "master.sock"
    managed = syn.config["haproxy"]["managed"]
    managed.update(master_socket_path=str(syn.master_socket), pid_file=str(run_dir / "h.pid"))
    syn.write_config()
    remount(run_dir, "ro")
    syn.process.start()
    wait_until(lambda: "event=haproxy_reload_failed" in syn.log(200), 20, what="a failed start")
    health = json.loads(health_answer(syn))
    assert not health["ok"]
    said = [p for p in health["problems"] if "cannot start HAProxy: cannot make" in p]
    assert said and "is on a read-only filesystem" in said[0], health
    log = syn.log(200)
    assert "key=haproxy.managed.master_socket_path" in log and "error=EROFS" in log
    assert "[ALERT]" not in log  # (not started just to fail: HAProxy is not run meanwhile)
    time.sleep(12)  # (the backoff would have grown to 8 s and more)
    writable_then_served(syn, run_dir, port)


def test_a_reload_waits_while_the_socket_dir_is_read_only_and_haproxy_serves_on(
    backend: HttpBackend, run_dir: Path
) -> None:
    """A master reload re-executes HAProxy's master, which must bind its master socket
    again: on a read-only directory it exits, and every service with it (before: a SIGHUP
    adding a service refused all of them). The reload waits; servers still change at
    runtime; the new service comes within seconds of the directory being writable."""
    port, other = free_port(), free_port()
    syn = synapse_with_state_dir(backend, port)
    syn.master_socket = run_dir / "master.sock"
    managed = syn.config["haproxy"]["managed"]
    managed.update(master_socket_path=str(syn.master_socket), pid_file=str(run_dir / "h.pid"))
    syn.write_config()
    syn.start()
    wait_serving(port, {"b1"})
    remount(run_dir, "ro")
    syn.config["services"]["other"] = {
        **syn.config["services"]["web"],
        "haproxy": {"port": other, "bind_address": "127.0.0.1"},
    }
    syn.write_config()
    syn.signal(signal.SIGHUP)
    wait_until(lambda: "cannot reload HAProxy" in health_answer(syn), 20, what="the held reload")
    wait_serving(port, {"b1"})  # (HAProxy was not reloaded to death)
    assert "[ALERT]" not in syn.log(400)
    writable_then_served(syn, run_dir, other)
