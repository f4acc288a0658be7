"""Child-process plumbing shared by the local servers: ports, polling, managed processes."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self, TypeVar

from . import ports

T = TypeVar("T")


class ProcessDied(RuntimeError):
    """A managed server exited while we were waiting for it: waiting longer is pointless."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1, never handed out before here or in another live process
    (testbed/ports.py: below the kernel's ephemeral range, reserved by a lock)."""
    return ports.free_port()


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `predicate` until it returns something truthy and return that.

    Exceptions raised by the predicate count as "not yet" (a server that is still starting
    refuses connections); the last one is named in the TimeoutError. ProcessDied is raised
    at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except ProcessDied:
            raise
        except Exception as exc:  # readiness probes fail in many ways while starting
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}")
        time.sleep(interval)


def rss_mb(pid: int) -> float:
    """A process's VmRSS in MB (0 when it has none: a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (exited, or a zombie nobody has reaped yet, all of its
    threads gone: only then are its files, its listening sockets among them, closed).

    A killed multi-threaded process's first thread shows "Z" while its other threads are
    still exiting, and a connection to its port is still accepted then (round 48: a killed
    HAProxy worker with 4 threads, 30 of 100 kills; a CI run's test saw it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        return True
    # Field 3, after the parenthesised command name, is the state.
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X") and threads == [str(pid)]


def wait_processes_gone(pids: Iterable[int], timeout: float = 10.0) -> None:
    """Wait until every pid is gone; TimeoutError names the survivors."""
    pids = list(pids)
    try:
        wait_until(lambda: all(process_gone(p) for p in pids), timeout, what="processes to exit")
    except TimeoutError as err:
        alive = [p for p in pids if not process_gone(p)]
        raise TimeoutError(f"{err}: still running: {alive}") from err


_live_lock = threading.Lock()
_live: set[ManagedProcess] = set()
# (name, log) of every ManagedProcess started here, in order: a failed test's report shows
# the logs of those it started (tests/conftest.py)
_started: list[tuple[str, Path]] = []


def live_processes() -> list[ManagedProcess]:
    """ManagedProcesses started in this process and not yet stopped (for leak checks)."""
    with _live_lock:
        return [p for p in _live if p.alive]


def started_since(mark: int) -> list[tuple[str, Path]]:
    """(name, log path) of the ManagedProcesses started after ``started_since(0)`` had
    ``mark`` entries (``len(started_since(0))`` is the mark to take now)."""
    with _live_lock:
        return _started[mark:]


class ManagedProcess:
    """A child process in its own process group, logging to `<workdir>/<name>.log`.

    Signals go to the whole group so helpers a server forks (HAProxy workers) go with it.
    """

    def __init__(
        self,
        args: Sequence[str],
        workdir: str | os.PathLike[str],
        name: str,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = [str(a) for a in args]
        self.workdir = Path(workdir)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.log_path = self.workdir / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                self.args,
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own session and process group
            )
        with _live_lock:
            _live.add(self)
            _started.append((self.name, self.log_path))
        return self

    @property
    def pid(self) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._popen is None else self._popen.poll()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._popen is None:
            return
        # The group id equals the leader's pid; it may outlive the leader (orphaned workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._popen.pid, sig)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop several servers at once, then stop() each)."""
        if self.alive:
            self._signal_group(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self._signal_group(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; waits for the process. Idempotent."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.terminate()
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self._popen.wait(10)
        self._reap()
        return self._popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the whole group and wait for it."""
        if self._popen is None:
            return None
        self._signal_group(signal.SIGKILL)
        self._popen.wait(10)
        self._reap()
        return self._popen.returncode

    def _reap(self) -> None:
        # Leftover group members (e.g. an old HAProxy worker) must not survive the leader.
        self._signal_group(signal.SIGKILL)
        with _live_lock:
            _live.discard(self)

    def pause(self) -> None:
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def wait(self, timeout: float | None = None) -> int:
        if self._popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._popen.wait(timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def check_alive(self) -> None:
        """Raise ProcessDied (with the log's tail) if the process has exited."""
        if not self.alive:
            raise ProcessDied(self.describe_failure())

    def describe_failure(self) -> str:
        """A message for errors: exit status and the log's last lines."""
        state = "running" if self.alive else f"exited with {self.returncode}"
        return f"{self.name} ({state}); last lines of {self.log_path}:\n{self.log_tail()}"

    def __repr__(self) -> str:
        pid = self._popen.pid if self._popen else None
        return f"<ManagedProcess {self.name} pid={pid} alive={self.alive}>"


_temp_dirs: set[str] = set()


def make_temp_dir(prefix: str) -> Path:
    """A private temp dir that the exit handler removes if its owner never does."""
    path = tempfile.mkdtemp(prefix=prefix)
    with _live_lock:
        _temp_dirs.add(path)
    return Path(path)


def remove_temp_dir(path: str | os.PathLike[str]) -> None:
    shutil.rmtree(path, ignore_errors=True)
    with _live_lock:
        _temp_dirs.discard(str(path))


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: a crashed run must not leave servers (or their temp dirs) behind."""
    with _live_lock:
        leftovers = list(_live)
        dirs = list(_temp_dirs)
    for proc in leftovers:
        with contextlib.suppress(Exception):
            proc.kill()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


class OneProcess:
    """A server node run as one ManagedProcess (``process`` is None until it starts)."""

    process: ManagedProcess | None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class ServerGroup:
    """Work-directory ownership shared by the local servers (ZooKeeper, etcd, HAProxy).

    A server given no directory makes a temp dir and owns it: ``stop()`` keeps the data so a
    restart reuses it, ``cleanup()`` removes it, and ``with`` does both at the end.
    """

    workdir: Path
    _own_dir: bool

    def _init_workdir(self, workdir: str | os.PathLike[str] | None, prefix: str) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or make_temp_dir(prefix))

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def cleanup(self) -> None:
        """Remove the temp dir made for us (stop() keeps it: a restart reuses the data)."""
        if self._own_dir:
            remove_temp_dir(self.workdir)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()
