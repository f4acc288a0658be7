"""Shared fixtures: real ZooKeeper, etcd, HAProxy and HTTP backends on 127.0.0.1.

Sections: process hygiene | ZooKeeper | etcd | HAProxy | HTTP backends. Servers are
started on free ports in temporary directories and stopped by PID at teardown; each
fixture checks that the processes it started are really gone.

Module-scoped servers (`zk`, `etcd`) are shared by the tests of one module: use your own
key prefix / znode path per test. `zk` is one JVM for the whole run, emptied for each module.
Tests that kill or restart members use the function-scoped `zk_ensemble` and `etcd_cluster`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from testbed.etcd import EtcdCluster
from testbed.haproxy import HAProxyProcess, minimal_global
from testbed.httpbackend import HttpBackend
from testbed.process import live_processes, started_since, wait_processes_gone
from testbed.zookeeper import ZooKeeperEnsemble, ZooKeeperServer, super_digest_jvm_arg, wipe

# --------------------------------------------------------------------------- process hygiene


def _sigterm_to_interrupt(signum: int, frame: FrameType | None) -> None:
    # A CI runner's SIGTERM then unwinds like Ctrl-C: fixtures tear down, servers stop.
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # The daemons tests spawn (.venv/bin/synapse, nerve) import this checkout's code, not
    # the one the .venv was installed from (editable: a git worktree beside it ran main's).
    root = str(Path(__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_interrupt)


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_servers() -> Iterator[None]:
    """Fail the run if a server started through testbed outlives every fixture."""
    yield
    leftovers = live_processes()
    for proc in leftovers:
        proc.kill()
    assert not leftovers, f"servers left running after the tests (now killed): {leftovers}"


_STARTED_BEFORE = pytest.StashKey[int]()
LOG_LINES = 60  # of each daemon's log in a failed test's report
LOGS_SHOWN = 6  # the last daemons the test started


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_STARTED_BEFORE] = len(started_since(0))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator:
    """A failed test's report carries the last lines of the logs of the daemons (nerve,
    synapse, servers) it started: a CI failure says what they did, not only what timed out."""
    report = yield
    if report.failed and report.when in ("setup", "call"):
        started = started_since(item.stash.get(_STARTED_BEFORE, 0))
        for name, log in started[-LOGS_SHOWN:]:
            try:
                tail = log.read_text(errors="replace").splitlines()[-LOG_LINES:]
            except OSError as err:
                tail = [f"(not readable: {err})"]
            report.sections.append((f"last {LOG_LINES} lines of {name} ({log})", "\n".join(tail)))
    return report


def _stop_and_check(stop: Callable[[], None], pids: list[int | None]) -> None:
    stop()
    wait_processes_gone([p for p in pids if p is not None])


# --------------------------------------------------------------------------- ZooKeeper


@pytest.fixture(scope="session")
def _zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    # One JVM for the whole run: one started and stopped per module cost ~1 s x 80 modules.
    server = ZooKeeperServer(
        workdir=tmp_path_factory.mktemp("zk"), jvm_args=[super_digest_jvm_arg()]
    ).start()
    yield server
    _stop_and_check(server.kill, [server.pid])  # (nothing in it is kept: no clean stop)


@pytest.fixture(scope="module")
def zk(_zookeeper: ZooKeeperServer) -> ZooKeeperServer:
    """A standalone ZooKeeper shared by the module's tests (`zk.hosts`), empty when the
    module starts. Not to be stopped: a test that stops its server starts its own."""
    if not _zookeeper.alive:
        _zookeeper.start()  # (a module stopped it anyway: the next one gets it back)
    wipe(_zookeeper.hosts)
    return _zookeeper


@pytest.fixture
def zk_ensemble(tmp_path: Path) -> Iterator[ZooKeeperEnsemble]:
    """A fresh 3-member ensemble; the test may kill, stop and restart members."""
    ensemble = ZooKeeperEnsemble(size=3, workdir=tmp_path / "zk-ensemble").start()
    # Members restarted by the test get new pids: collect them at teardown.
    yield ensemble
    _stop_and_check(ensemble.stop, ensemble.pids)


# --------------------------------------------------------------------------- etcd


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A single etcd member shared by the module's tests (`etcd.host`, `etcd.port`)."""
    cluster = EtcdCluster(size=1, workdir=tmp_path_factory.mktemp("etcd")).start()
    yield cluster
    _stop_and_check(cluster.stop, cluster.pids)


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """A fresh 3-member etcd cluster; the test may kill, stop and restart members."""
    cluster = EtcdCluster(size=3, workdir=tmp_path / "etcd-cluster").start()
    yield cluster
    _stop_and_check(cluster.stop, cluster.pids)


# --------------------------------------------------------------------------- HAProxy

# AF_UNIX paths are limited to 108 bytes; long tmp paths fall back to a short dir.
_MAX_SOCKET_DIR = 90

HAProxyConfig = str | Callable[[Path], str]
HAProxyFactory = Callable[..., HAProxyProcess]


@pytest.fixture
def haproxy_factory(tmp_path: Path) -> Iterator[HAProxyFactory]:
    """Start HAProxy (master-worker) processes; all are stopped at teardown.

    `haproxy_factory(config)` where config is the config text or a callable taking the
    workdir and returning it. A config without a `global` section gets minimal_global()
    (admin socket in the workdir) prepended. Also `haproxy_factory(config_path=path,
    workdir=dir)` for a config file written by the code under test.
    """
    started: list[HAProxyProcess] = []
    short_dirs: list[tempfile.TemporaryDirectory[str]] = []

    def new_workdir() -> Path:
        workdir = tmp_path / f"haproxy{len(started) + 1}"
        if len(str(workdir)) > _MAX_SOCKET_DIR:
            short_dirs.append(tempfile.TemporaryDirectory(prefix="hap-"))
            workdir = Path(short_dirs[-1].name)
        workdir.mkdir(exist_ok=True)
        return workdir

    def start(
        config: HAProxyConfig | None = None,
        *,
        workdir: Path | None = None,
        config_path: Path | None = None,
    ) -> HAProxyProcess:
        workdir = workdir or new_workdir()
        text = None
        if config is not None:
            text = config(workdir) if callable(config) else config
            if not any(line.startswith("global") for line in text.splitlines()):
                text = minimal_global(workdir) + "\n" + text
        proc = HAProxyProcess(text, workdir, config_path=config_path)
        started.append(proc)
        return proc.start()

    yield start

    for proc in started:
        pids: list[int | None] = []
        if proc.alive:
            pids.append(proc.pid)
            # If the master does not answer, the group kill in stop() still takes the workers.
            with contextlib.suppress(OSError):
                pids += proc.worker_pids()
        _stop_and_check(proc.stop, pids)
    for short in short_dirs:
        short.cleanup()


# --------------------------------------------------------------------------- HTTP backends

HttpBackendFactory = Callable[..., HttpBackend]


@pytest.fixture
def http_backend_factory() -> Iterator[HttpBackendFactory]:
    """Start in-process HTTP backends: `http_backend_factory(name=None, port=None)`.

    Each answers `GET /` with its name and `GET /health` with 200 (503 after
    `set_healthy(False)`); `stop()` closes the port, `start()` reopens the same port.
    """
    backends: list[HttpBackend] = []

    def start(name: str | None = None, port: int | None = None) -> HttpBackend:
        backend = HttpBackend(name or f"backend-{len(backends) + 1}", port=port)
        backends.append(backend)
        return backend.start()

    yield start

    for backend in backends:
        backend.stop()
