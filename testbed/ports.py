"""Ports for the servers tests, the demo and bench start: never one handed out elsewhere.

Why: `make test` runs two pytest processes side by side, the demo and helper children are
processes of their own, and other checkouts may run their tests on the same host. A port
picked by binding port 0 and closing stays free until its server binds it, and so does a
port whose server was stopped to be started again on it: another process's pick, a port-0
bind anywhere or an outgoing connection (both served from `net.ipv4.ip_local_port_range`)
could take it meanwhile (measured: two processes of 1,000 picks each shared 60 ports).

So ports come from below the kernel's ephemeral range (`DEFAULT`, or `SMARTSTACK_TEST_PORTS`
= `LO-HI`), are never handed out twice by one process, and each is reserved across processes
for the life of the process that picked it: an open-file-description lock (F_OFD_SETLK) on
byte `port` of one shared file, which the kernel releases when that process ends, however.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

# Below the kernel's default ephemeral range (32768-60999); 20000-23999 are the fake server
# addresses tests name (nothing may listen there), 10000-18999 bench's listening ports.
DEFAULT = range(24000, 32768)
BENCH = range(10000, 19000)
ENV = "SMARTSTACK_TEST_PORTS"
LOCK_FILE = Path(tempfile.gettempdir()) / "smartstack-test-ports.lock"
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def parse_range(text: str) -> range:
    """`"LO-HI"` or `"LO<whitespace>HI"` (as /proc writes it) -> range(LO, HI + 1)."""
    lo, hi = text.replace("-", " ").split()
    ports = range(int(lo), int(hi) + 1)
    if not ports or ports.start < 1 or ports.stop > 65536:
        raise ValueError(f"not a port range: {text!r}")
    return ports


def choose_range(wanted: str | None, ephemeral: range | None) -> range:
    """`wanted` (the environment's LO-HI) if set, else the longest part of DEFAULT outside
    the ephemeral range, else DEFAULT (a host whose ephemeral range covers it: the locks
    still keep our processes apart, a port-0 bind elsewhere may take a port as before)."""
    if wanted:
        return parse_range(wanted)
    if ephemeral is None:
        return DEFAULT
    below = range(DEFAULT.start, min(DEFAULT.stop, ephemeral.start))
    above = range(max(DEFAULT.start, ephemeral.stop), DEFAULT.stop)
    longest = max(below, above, key=len)
    return longest if longest else DEFAULT


def bindable(port: int) -> bool:
    """Nothing holds 127.0.0.1:`port` now (no SO_REUSEADDR: a TIME_WAIT there counts too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def kernel_port() -> int:
    """A port the kernel picks for a port-0 bind (from its ephemeral range), closed again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _set_lock(fd: int, port: int, kind: int) -> bool:
    # struct flock: short l_type, l_whence; off_t l_start, l_len; pid_t l_pid (0 for OFD locks).
    request = struct.pack("hhqqi4x", kind, os.SEEK_SET, port, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, request)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):  # another description holds it
            return False
        raise
    return True


class PortPicker:
    """Hands out ports of `ports` that `is_free` accepts, each once, locked in `lock_path`.

    Locks belong to this picker's open file description: two pickers, in one process or
    two, never hold the same port; closing the picker (or the process ending) frees them.
    """

    def __init__(
        self,
        ports: range,
        lock_path: Path = LOCK_FILE,
        is_free: Callable[[int], bool] = bindable,
        spill: Callable[[], int] | None = None,
    ) -> None:
        self.ports = ports
        self._lock_path = lock_path
        self._is_free = is_free
        self._spill = spill
        self._handed_out: set[int] = set()
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        # Pickers start apart, so concurrent processes rarely try each other's ports.
        self._next = random.randrange(len(ports))

    def pick(self) -> int:
        """A port no picker holds, free now: one of `ports`, else (all taken: several runs
        at once) one `spill` names; raises RuntimeError when there is none."""
        with self._mutex:
            fd = self._lock_fd()
            for _ in range(len(self.ports)):
                port = self.ports[self._next]
                self._next = (self._next + 1) % len(self.ports)
                if self._take(fd, port):
                    return port
            spill = self._spill
            for port in (spill() for _ in range(200)) if spill else ():
                if self._take(fd, port):
                    return port
        raise RuntimeError(
            f"no free port left in {self.ports.start}-{self.ports.stop - 1} (held by live "
            f"processes or in use; {ENV}=LO-HI names another range)"
        )

    def _take(self, fd: int, port: int) -> bool:
        if port in self._handed_out or not _set_lock(fd, port, fcntl.F_WRLCK):
            return False
        if not self._is_free(port):
            _set_lock(fd, port, fcntl.F_UNLCK)  # someone else's server: not ours to hold
            return False
        self._handed_out.add(port)
        return True

    def close(self) -> None:
        """Release every port this picker holds (its handed-out ports stay unavailable to it)."""
        with self._mutex:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    def _lock_fd(self) -> int:
        # A forked child shares the parent's description, hence its locks: it opens its own.
        if self._fd is None or self._pid != os.getpid():
            if self._fd is not None:
                os.close(self._fd)  # (the parent's copy keeps the parent's locks)
            self._fd = open_shared(self._lock_path)
            self._pid = os.getpid()
        return self._fd


def open_shared(path: Path) -> int:
    """`path` opened for locking by any user: created 0o666 whatever the umask, and an
    existing one opened without O_CREAT (fs.protected_regular refuses O_CREAT, even to root,
    on another user's file in a sticky directory such as /tmp)."""
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue  # another process made it meanwhile: open that one
        os.fchmod(fd, 0o666)  # (the umask took write from the others)
        return fd


_default: PortPicker | None = None
_default_mutex = threading.Lock()


def _ephemeral() -> range | None:
    try:
        return parse_range(_EPHEMERAL.read_text())
    except (OSError, ValueError):
        return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1, reserved for this process's life (see the module doc)."""
    global _default
    with _default_mutex:
        if _default is None:
            wanted = choose_range(os.environ.get(ENV), _ephemeral())
            _default = PortPicker(wanted, spill=kernel_port)
        picker = _default
    return picker.pick()
