"""A validating child that could not be started for want of the daemon's own resources.

A SIGHUP's config check runs in a child process (``smartstack.config_child``). At the
container's ``pids.max`` (systemd ``TasksMax``, ``ulimit -u``) its fork fails with EAGAIN,
at ``ulimit -n`` its pipe with EMFILE. That says nothing about the file: the reload is
refused as not checked (the running config stays) and tried again after RETRY_S, so the
change is applied once the limit has room again. Before (review s34), the OSError escaped
the reload: synapse logged only asyncio's "Task exception was never retrieved", nerve a
traceback, nothing was counted, and the SIGHUP was lost for good (a service added by it
was never served, even once the limit was lifted).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from smartstack.config_errors import ConfigError
from smartstack.logs import event

if TYPE_CHECKING:
    import asyncio  # (not at run time: smartstack.config_child's start forks before it)

RETRY_S = 5.0  # between tries while the child cannot be started

PROCESSES = "the process limit (the container's pids.max, systemd TasksMax, ulimit -u)"
LIMITS = {
    errno.EAGAIN: PROCESSES,
    errno.EMFILE: "the open-files limit (systemd LimitNOFILE, ulimit -n)",
    errno.ENFILE: "the system's open-files limit (fs.file-max)",
    errno.ENOMEM: "the memory limit (the container's, or the host's)",
}


class ChildNotStarted(ConfigError):
    """The config was not checked: the child could not be started (retry later)."""


def limit_reached(exc: BaseException) -> str | None:
    """Which of the daemon's limits ``exc`` (from starting a child) says it reached, or
    None for any other error (a bug, a missing interpreter: not retried)."""
    if isinstance(exc, OSError):
        return LIMITS.get(exc.errno or 0)
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return PROCESSES  # (asyncio's child watcher thread: threads count in pids.max)
    return None


def not_started(daemon: str, exc: BaseException, limit: str) -> ChildNotStarted:
    """The error line of a reload whose child could not start: what, which limit, what to do."""
    return ChildNotStarted(
        [
            f"the config was not checked: {daemon} could not start its validating child "
            f"({type(exc).__name__}: {exc}): {limit} is reached, raise it; the running "
            f"config stays and the reload is tried again every {RETRY_S:.0f} s"
        ]
    )


class RetryNotChecked:
    """Tries a reload again every RETRY_S while its child cannot start (``reload``: the
    daemon's SIGHUP path, folded with real SIGHUPs; ``failed``: told the error each time,
    for the metric and /status); logged at error once per streak, the retries at debug."""

    def __init__(
        self, log: logging.Logger, reload: Callable[[], None], failed: Callable[[str], None]
    ) -> None:
        self.log, self.reload, self.failed = log, reload, failed
        self._handle: asyncio.TimerHandle | None = None
        self._again = reload  # this streak's retry (``not_checked``'s ``again``)
        self._fired = self._quiet = False

    def begin(self) -> None:
        """A reload starts: the retry pending is no longer needed (nor one after a stop)."""
        self._quiet, self._fired = self._fired, False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def not_checked(
        self, path: object, exc: ChildNotStarted, again: Callable[[], None] | None = None
    ) -> bool:
        """Counted, logged, tried again after RETRY_S; False: not reloaded. ``again``: how,
        other than ``reload`` (synapse's run of its last good copy: that run again)."""
        import asyncio

        error = "; ".join(exc.lines)
        self.failed(error)
        level = logging.DEBUG if self._quiet else logging.ERROR
        event(self.log, "config_not_checked", level=level, path=str(path), error=error,
              retry_in_s=RETRY_S)  # fmt: skip
        self.begin()
        self._again = again or self.reload
        self._handle = asyncio.get_running_loop().call_later(RETRY_S, self._fire)
        return False

    def _fire(self) -> None:
        self._handle, self._fired = None, True
        self._again()
