"""A daemon's stderr that stops being read (journald stuck, a busy dockerd, a terminal
paused with Ctrl-S) fills its pipe; a log line then blocked the writing thread. Written from
the event loop, that froze the daemon: nerve kept a failing instance registered for as long
as the pipe stayed full (still registered after 15 s: requests sent to it failed), synapse
stopped following the registry. Now lines are written by a thread of their own
(smartstack/log_writer.py): both daemons go on, and their lines come out once the pipe
drains. Real nerve, synapse, HAProxy and ZooKeeper; the stderr is a FIFO the test fills."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from nerve_testlib import NerveProcess, children, nerve_config, unique_path, write_config
from nerve_testlib import zk_service as nerve_zk_service
from synapse_e2e import Synapse, http_get, register, wait, zk_service

from testbed.httpbackend import HttpBackend
from testbed.process import free_port
from testbed.stuck_pipe import StuckPipe
from testbed.zookeeper import ZooKeeperServer

CHECKS = [{"type": "http", "uri": "/health", "timeout": 1.0, "rise": 1, "fall": 2}]
WITHIN = 5.0  # s; nerve withdraws in ~0.4 s (2 failed checks 0.2 s apart), synapse in ms


@pytest.fixture
def pipe(tmp_path: Path) -> Iterator[StuckPipe]:
    stuck = StuckPipe(tmp_path / "stderr.fifo")
    yield stuck
    stuck.close()


@pytest.fixture
def nerve_on_pipe(tmp_path: Path, pipe: StuckPipe) -> Iterator[Callable[[dict], NerveProcess]]:
    """``start(config)``: a nerve whose stdout and stderr are the test's pipe."""
    started: list[NerveProcess] = []

    def start(config: dict) -> NerveProcess:
        nerve = NerveProcess(write_config(tmp_path / "nerve.json", config), tmp_path)
        nerve.process.log_path = pipe.path
        started.append(nerve.start())
        return nerve

    yield start
    for nerve in started:
        nerve.process.kill()


def test_nerve_withdraws_a_failing_instance_while_its_stderr_is_full(
    zk: ZooKeeperServer,
    writer: KazooClient,
    pipe: StuckPipe,
    nerve_on_pipe: Callable[[dict], NerveProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    backend, path = http_backend_factory(), unique_path()
    block = nerve_zk_service(zk.hosts, path, backend.port, checks=CHECKS)
    nerve = nerve_on_pipe(nerve_config({"web": block}))
    wait(lambda: children(writer, path), what="the registration")
    assert pipe.fill() > 0
    backend.set_healthy(False)
    failed = time.monotonic()
    wait(lambda: not children(writer, path), WITHIN, what="the withdrawal (stderr full)")
    assert time.monotonic() - failed < WITHIN
    assert nerve.process.alive
    # Nothing lost: the lines come out once the reader is back.
    assert "service_withdrawn" in pipe.drain()


def test_nerve_starts_with_a_config_warning_while_its_stderr_is_full(
    zk: ZooKeeperServer,
    writer: KazooClient,
    pipe: StuckPipe,
    nerve_on_pipe: Callable[[dict], NerveProcess],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    """A restart while the journal is stuck: the config's warnings (an unknown key) were
    printed to stderr at start, blocking before anything registered (not within 15 s)."""
    backend, path = http_backend_factory(), unique_path()
    config = nerve_config({"web": nerve_zk_service(zk.hosts, path, backend.port)})
    config["bogus_key"] = 1
    assert pipe.fill() > 0
    nerve_on_pipe(config)
    wait(lambda: children(writer, path), WITHIN, what="the registration (stderr full)")
    warnings = [line for line in pipe.drain().splitlines() if line.startswith("warning: ")]
    assert warnings and "bogus_key" in warnings[0]


def test_synapse_follows_the_registry_while_its_stderr_is_full(
    zk: ZooKeeperServer,
    writer: KazooClient,
    pipe: StuckPipe,
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    path, port = unique_path("/stuck-stderr"), free_port()
    first, second = http_backend_factory("first"), http_backend_factory("second")
    register(writer, path, first)
    synapse = Synapse({"web": zk_service(zk, path, port)})  # --log-level debug: many lines
    synapse.process.log_path = pipe.path
    synapse.process.start()
    try:
        wait(lambda: _served(port) == "first", what="synapse serving the first backend")
        assert pipe.fill() > 0
        register(writer, path, second)
        writer.delete(f"{path}/{_child(writer, path, 'first')}")
        wait(lambda: _served(port) == "second", WITHIN, what="the change (stderr full)")
        assert all(_served(port) == "second" for _ in range(5))
        assert synapse.metric("synapse_log_lines_dropped_total") == 0
        # Nothing lost: the change's lines come out once the reader is back.
        assert "event=haproxy_applied reason=zookeeper:web ops=" in pipe.drain()
    finally:
        synapse.cleanup()


def _served(port: int) -> str:
    try:
        return http_get(port, timeout=1.0)[1]
    except OSError:
        return ""


def _child(writer: KazooClient, path: str, name: str) -> str:
    return next(child for child in writer.get_children(path) if child.startswith(f"{name}_"))
