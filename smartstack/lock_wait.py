"""Waiting for a daemon's instance lock, however it is held (a file's ``flock``, an
abstract socket's name): one wait, one set of events and one message for both
(``smartstack.instance_lock``, ``smartstack.identity_lock``)."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from smartstack.logs import event

log = logging.getLogger("smartstack.instance_lock")  # (the events' logger, as before)

POLL_S = 0.1


def wait_turn(
    daemon: str,
    what: str,
    config_path: str,
    other: str,
    wait_s: float,
    take: Callable[[], bool],
    holder: Callable[[], tuple[str, str | None]],
    **fields: str,
) -> None:
    """Call ``take`` until it gets the lock (True), for up to ``wait_s``; then exit 1 naming
    the holder, or 130 on a SIGINT meanwhile (``smartstack.instance_lock``). ``what``: the
    lock's path (or socket name) in the events and the message; ``fields``: more for them."""
    start = time.monotonic()
    waiting = False
    with sigint_raises():  # (started with SIGINT ignored: a background job, nohup)
        try:
            while not take():
                if not waiting:
                    waiting = True
                    event(log, "instance_lock_waiting", holder_pid=holder()[0], path=what,
                          wait_s=wait_s, **fields)  # fmt: skip
                if time.monotonic() - start >= wait_s:
                    pid, holder_config = holder()
                    running = holder_config or config_path  # (an older holder wrote no path)
                    event(log, "instance_lock_held", level=logging.ERROR, holder_pid=pid,
                          holder_config=running, path=what, waited_s=round(wait_s, 1),
                          **fields)  # fmt: skip
                    print(f"error: {daemon} pid {pid} already runs with {running} (lock {what}):"
                          f" stop it first, or give this one {other}",
                          file=sys.stderr)  # fmt: skip
                    raise SystemExit(1)
                time.sleep(POLL_S)
        except KeyboardInterrupt:  # (SIGINT, a Ctrl-C on a debug run that waits: no traceback)
            event(log, "instance_lock_wait_interrupted", level=logging.WARNING, path=what,
                  waited_s=round(time.monotonic() - start, 1))  # fmt: skip
            raise SystemExit(130) from None
    if waiting:
        event(log, "instance_lock_taken", path=what,
              waited_s=round(time.monotonic() - start, 1))  # fmt: skip


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt meanwhile, also in a process started with it ignored
    (Python then installs no handler): the daemon's loop takes SIGINT as a stop later on
    whatever it inherited, so its wait for the lock must end on one as well."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def warn_unavailable(path: str, exc: OSError) -> None:
    event(log, "instance_lock_unavailable", level=logging.WARNING, path=path,
          error=f"{type(exc).__name__}: {exc}", detail="running without the guard")  # fmt: skip
