"""Structured logging: one event per line, ``key=value`` (default) or JSON.

Call ``event(log, "registered", service="web", path="/nerve/web/i1_0000000001")``;
plain ``log.info("text")`` works too and is rendered as ``msg="text"``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from smartstack import log_writer
from smartstack.log_writer import BackgroundStreamHandler

_FIELDS = "smartstack_fields"
_CONTEXT = "smartstack_context"  # fields added to a plain (non-event) line, e.g. kazoo's


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event named ``name`` with its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={_FIELDS: fields}, stacklevel=2)


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quoted (and so escaped) as soon as it could end a field or forge a line: spaces, quotes,
    # '=', backslashes and any control character (\r, ESC, ...), whatever a registry said.
    if text == "" or any(c in ' "=\\' or not c.isprintable() for c in text):
        return json.dumps(text)
    return text


def timestamp(record: logging.LogRecord) -> str:
    """The one timestamp format of both log formats: UTC, ISO 8601, milliseconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


def _fields(record: logging.LogRecord) -> tuple[str, str, dict[str, Any]]:
    """("event" or "msg", its text, the fields that follow it)."""
    fields: dict[str, Any] | None = getattr(record, _FIELDS, None)
    if fields is None:
        return "msg", record.getMessage(), dict(getattr(record, _CONTEXT, None) or {})
    return "event", record.getMessage(), fields


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind, text, fields = _fields(record)
        parts = [
            f"ts={timestamp(record)}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"{kind}={_quote(text)}",
        ]
        parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind, text, fields = _fields(record)
        out: dict[str, Any] = {
            "ts": timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            kind: text,
        }
        out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str = "info", fmt: str = "kv") -> None:
    """Configure the root logger once for a daemon: stderr, written by its own thread (a
    stuck stderr drops lines, it never stalls the daemon: log_writer.py)."""
    handler = BackgroundStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, BackgroundStreamHandler):  # its thread ends
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kazoo is chatty at INFO about every connection attempt.
    logging.getLogger("kazoo").setLevel(max(root.level, logging.WARNING))
    # What Python itself prints to stderr goes through the writer too (never blocking).
    logging.captureWarnings(True)
    threading.excepthook = _thread_died
    sys.unraisablehook = _unraisable


def _thread_died(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        name = getattr(args.thread, "name", "?")
        error = (args.exc_type, args.exc_value, args.exc_traceback)
        logging.getLogger("smartstack.crash").error("thread %s died", name, exc_info=error)


def _unraisable(args: Any) -> None:  # sys.UnraisableHookArgs
    error = (args.exc_type, args.exc_value, args.exc_traceback)
    message = args.err_msg or "Exception ignored in"
    logging.getLogger("smartstack.crash").warning("%s: %r", message, args.object, exc_info=error)


class Streak:
    """Counts a repeated failure so that it is logged once per state change, not per retry.

    ``note()`` says to log when a streak starts, when its kind of error changes, and as a
    reminder every ``remind_every`` seconds; ``end()`` closes the streak with its count and
    duration. Thread-safe (kazoo's threads use it).
    """

    def __init__(
        self, remind_every: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.remind_every, self.clock = remind_every, clock
        self.count = 0
        self.since: float | None = None
        self._kind: str | None = None
        self._logged_at = 0.0
        self._lock = threading.Lock()

    def note(self, kind: str) -> bool:
        """Count one failure; True when it is to be logged."""
        with self._lock:
            now = self.clock()
            self.count += 1
            if self.since is None:
                self.since = now
            due = now - self._logged_at >= self.remind_every
            if self.count == 1 or kind != self._kind or due:
                self._kind, self._logged_at = kind, now
                return True
            return False

    def end(self) -> tuple[int, float] | None:
        """End a streak: (failures, seconds), or None when nothing was failing."""
        with self._lock:
            if self.since is None:
                return None
            ended = (self.count, round(self.clock() - self.since, 1))
            self.count, self.since, self._kind, self._logged_at = 0, None, None, 0.0
            return ended


class FailureStreak(Streak):
    """A ``Streak`` that logs: the ``failed`` event (with ``failures``, the count so far)
    when ``note`` says so, and one ``recovered`` event (``failures``, ``seconds``) when a
    streak ends. Call sites: ``streak.failure(error, service=...)``, ``streak.success()``."""

    def __init__(
        self, logger: logging.Logger, failed: str, recovered: str,
        level: int = logging.WARNING, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.logger, self.failed, self.recovered, self.level = logger, failed, recovered, level

    def failure(self, error: str, **fields: Any) -> None:
        """One more failure; ``error``'s text before the first ':' is its kind."""
        if self.note(error.split(":", 1)[0]):
            event(self.logger, self.failed, self.level, **fields, error=error, failures=self.count)

    def success(self, **fields: Any) -> None:
        ended = self.end()
        if ended is not None:
            event(self.logger, self.recovered, **fields, failures=ended[0], seconds=ended[1])


# kazoo's messages that repeat on every connection attempt while the ensemble is away.
_KAZOO_REPEATS = ("Connection dropped", "Connection time-out", "Transition to CONNECTING",
                  "Cannot resolve", "Failed connecting")  # fmt: skip


class KazooLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """kazoo's logger for one connection (``KazooClient(logger=...)``): every line names the
    ensemble (``zk=host:port,...``), and what kazoo logs on every reconnect attempt is
    logged once per outage (``failures``: the count; ``zk_connected`` closes the streak)."""

    def __init__(self, hosts: str) -> None:
        super().__init__(logging.getLogger("kazoo.client"), {"zk": hosts})
        self.streak = Streak()

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        context: dict[str, Any] = dict(self.extra or {})
        if level >= logging.WARNING and str(msg).startswith(_KAZOO_REPEATS):
            # Counted even when not shown: zk_connected reports the attempts of the outage.
            if not self.streak.note("unreachable"):  # all of them: one outage
                return
            context["failures"] = self.streak.count
        if not self.isEnabledFor(level):
            return
        kwargs["extra"] = {_CONTEXT: context}
        self.logger.log(level, msg, *args, **kwargs)

    def warn(self, msg: Any, *args: Any, **kwargs: Any) -> None:  # kazoo still calls warn()
        self.log(logging.WARNING, msg, *args, **kwargs)


def flush(most: float = log_writer.EXIT_MAX) -> None:
    """Write the lines queued so far (before printing to stderr directly: keeps the order;
    before an exit): while they go out, at most ``most`` s, 0.5 s if stderr is stuck."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BackgroundStreamHandler):
            handler.flush(most=most)
        else:
            handler.flush()


def writer() -> BackgroundStreamHandler | None:
    """The daemon's log writer, once ``setup`` ran."""
    found = [h for h in logging.getLogger().handlers if isinstance(h, BackgroundStreamHandler)]
    return found[0] if found else None


def lines_dropped() -> int:
    """Log lines the daemon could not write (its stderr stuck): /metrics."""
    return BackgroundStreamHandler.dropped_in_process
