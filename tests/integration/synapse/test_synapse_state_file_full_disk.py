"""The state file on a disk that fills up: it catches up within seconds of space returning.

Review s29 (MEDIUM-1): while the state file's directory was full a server was added, one
removed; 20 s after space returned the file still held the servers of before (the cache
wrote only on a change, or a quarter TTL later), /health said nothing, and a host crash
then a start with ZooKeeper down served the removed server and missed the new one.
Real synapse, managed HAProxy and ZooKeeper, the state file on a small tmpfs filled to the
last byte (root: mounting needs it).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from synapse_e2e import Synapse, register, wait_serving, zk_service

from testbed.httpbackend import HttpBackend
from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer

PATH = "/full-disk/web"


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 256 KB tmpfs (unmounted after the test); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    where = Path(tempfile.mkdtemp(prefix="full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)
    where.rmdir()


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte: big writes, then byte by byte."""
    with open(disk / "FILLER", "wb", buffering=0) as filler:
        for size in (65536, 4096, 1):
            try:
                while filler.write(b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def in_file(path: Path) -> list[str]:
    web = json.loads(path.read_text()).get("web", {})
    return sorted(v["name"] for v in web.values() if isinstance(v, dict) and not v.get("left"))


def degraded(syn: Synapse) -> list[str]:
    return json.loads(syn.admin("/health")).get("degraded", [])


def test_the_state_file_catches_up_within_seconds_of_space_returning(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory, small_disk: Path
) -> None:
    a, b, c = (http_backend_factory(n) for n in "abc")
    nodes = {x.name: register(writer, PATH, x) for x in (a, b)}
    port, state = free_port(), small_disk / "synapse-state.json"
    config = {"web": zk_service(zk, PATH, port)}
    with Synapse(config, haproxy={"state_file_path": str(state)}) as syn:
        catches_up(syn, writer, nodes, c, port, small_disk)


def catches_up(
    syn: Synapse, writer: KazooClient, nodes: dict[str, str], c: HttpBackend, port: int, disk: Path
) -> None:
    """Synapse serves a and b, its state file says so; the disk fills, b goes, c comes."""
    state = disk / "synapse-state.json"
    wait_serving(port, {"a", "b"})
    wait_until(lambda: state.exists() and in_file(state) == ["a", "b"], 10, what="state file")
    fill(disk)
    register(writer, PATH, c)
    writer.delete(nodes["b"])
    wait_serving(port, {"a", "c"})
    wait_until(lambda: any(x.startswith("state file:") for x in degraded(syn)), 10,
               what="/health degraded to name the state file")  # fmt: skip
    [said] = [x for x in degraded(syn) if x.startswith("state file:")]
    assert "ENOSPC" in said and str(state) in said
    assert syn.status()["state_file"]["write_error"].startswith("ENOSPC")
    time.sleep(3)  # (retries: one a second)
    assert syn.metric("synapse_state_file_write_failing_seconds") >= 2
    assert in_file(state) == ["a", "b"], "the disk is full: the file lags"
    assert not [p.name for p in disk.iterdir() if p.name.endswith(".tmp")]
    (disk / "FILLER").unlink()
    freed = time.monotonic()
    wait_until(lambda: in_file(state) == ["a", "c"], 5, what="the state file to catch up")
    caught_up = time.monotonic() - freed
    assert caught_up <= 3, caught_up  # (before: still ["a", "b"] 20 s later)
    wait_until(lambda: degraded(syn) == [], 5, what="/health degraded to clear")
    assert syn.metric("synapse_state_file_write_failing_seconds") == 0
    log = syn.process.log_path.read_text()
    assert log.count("event=state_file_write_failed ") == 1, "once, not per retry"
    assert log.count("event=state_file_write_recovered ") == 1
    assert not [p.name for p in disk.iterdir() if p.name.endswith(".tmp")]
