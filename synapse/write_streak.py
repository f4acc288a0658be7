"""A file's failing writes, said when they begin and when they end (``FailureStreak``).

A full or read-only disk fails every retry the same way: a line per retry (every second
for the state file) would fill the log, which is often on that very disk, and hide when
it began. The streak keeps when it began, for /health, /status and the metrics
(``synapse.daemon_status``, ``synapse.metrics``).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from smartstack.logs import FailureStreak, event


def errno_name(exc: OSError) -> str:
    """``ENOSPC``, ``EROFS``, ...: what an alert or a grep looks for (``?``: none)."""
    return errno.errorcode.get(exc.errno or 0, "?")


class WriteStreak(FailureStreak):
    """``write_failed`` after each failed write of ``path``, ``written`` after each good one: the
    ``failed`` event at the streak's first failure (again when the errno changes, and every
    5 minutes as a reminder), the ``recovered`` one (failures, seconds) when a write ends it."""

    def __init__(
        self, logger: logging.Logger, failed: str, recovered: str, path: str,
        level: int = logging.WARNING,
    ) -> None:  # fmt: skip
        super().__init__(logger, failed, recovered, level)
        self.path = path
        self.error: str | None = None  # the last failure: "ENOSPC: No space left on device"
        self.total = 0  # failed writes ever (/status)

    @property
    def failing(self) -> bool:
        return self.since is not None

    def failing_for(self) -> float:
        """Seconds since the streak's first failure (0: not failing)."""
        since = self.since
        return 0.0 if since is None else max(0.0, self.clock() - since)

    def write_failed(self, exc: OSError, **fields: Any) -> None:
        self.total += 1
        self.error = f"{errno_name(exc)}: {exc.strerror or exc}"[:200]
        self.failure(self.error, path=self.path, errno=errno_name(exc), **fields)

    def written(self) -> None:  # (a good write: ends a streak)
        self.error = None
        self.success(path=self.path)

    def abandoned(self, name: str, **fields: Any) -> None:
        """The file is no longer written (moved by a SIGHUP): a streak ends unrecovered,
        said as ``name`` (failures, seconds), or its start would stand alone in the log."""
        ended = self.end()
        self.error = None
        if ended is not None:
            event(self.logger, name, self.level, path=self.path, failures=ended[0],
                  seconds=ended[1], **fields)  # fmt: skip

    def degraded(self, what: str, effect: str) -> list[str]:
        """/health's ``degraded`` line while failing (none otherwise): a file behind what
        synapse serves does not stop the serving, so it is said, not a 503."""
        if self.since is None:
            return []
        return [f"{what}: {self.path} not written for {self.failing_for():.0f} s "
                f"({self.count} failed writes, {self.error}): {effect}"]  # fmt: skip

    def status(self) -> dict[str, Any]:
        """For /status: the streak now (``write_error`` None: the last write succeeded)."""
        return {"path": self.path, "write_error": self.error,
                "failing_for_s": round(self.failing_for(), 1),
                "failed_writes": self.total}  # fmt: skip
