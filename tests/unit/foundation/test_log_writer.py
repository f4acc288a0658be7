"""The log handler that never blocks its caller: a stuck stream queues lines up to the cap,
drops and counts the rest, says so once the stream moves, keeps the order."""

from __future__ import annotations

import io
import logging
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from smartstack import logs
from smartstack.build_info import instrument
from smartstack.log_writer import BackgroundStreamHandler
from smartstack.logs import KeyValueFormatter, event


class StuckStream(io.StringIO):
    """A stream whose writes wait until ``release`` is set (a full pipe)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(10)
        return super().write(text)


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def _dropped_soon(handler: BackgroundStreamHandler, lines: int) -> int:
    """The handler's drop count once it reached ``lines`` (or after 5 s)."""
    deadline = time.monotonic() + 5
    while handler.dropped_total < lines and time.monotonic() < deadline:
        time.sleep(0.01)
    return handler.dropped_total


def _logger(handler: logging.Handler, name: str) -> logging.Logger:
    handler.setFormatter(KeyValueFormatter())
    log = logging.getLogger(name)
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    return log


def test_a_stuck_stream_never_blocks_the_caller_and_the_cap_drops_and_counts() -> None:
    stream = StuckStream()
    handler = BackgroundStreamHandler(stream, capacity=2000)
    log = _logger(handler, "test.writer.stuck")
    event(log, "first")
    assert stream.entered.wait(5)  # the writer holds "first", blocked in write()
    started = time.monotonic()
    for n in range(200):
        event(log, "queued", n=n)
    assert time.monotonic() - started < 1.0  # would be for ever on a blocking handler
    assert 0 < handler.dropped_total < 200
    dropped = handler.dropped_total
    stream.release.set()
    handler.flush(5)
    lines = stream.getvalue().splitlines()
    assert "event=first" in lines[0]
    numbers = [int(line.rsplit("n=", 1)[1]) for line in lines if "event=queued" in line]
    assert numbers == list(range(len(numbers)))  # in order, the dropped ones at the end
    assert len(numbers) + dropped == 200
    assert "event=log_lines_dropped" in lines[-1] and f"lines={dropped}" in lines[-1]
    assert "level=warning" in lines[-1]
    handler.close()


def test_lines_are_written_promptly_and_nothing_is_dropped_on_a_free_stream() -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "test.writer.free")
    for n in range(1000):
        event(log, "line", n=n)
    handler.flush(5)
    assert len(stream.getvalue().splitlines()) == 1000 and handler.dropped_total == 0
    handler.close()


def test_a_broken_stream_counts_its_lines_as_dropped_and_raises_nothing() -> None:
    handler = BackgroundStreamHandler(BrokenStream())
    log = _logger(handler, "test.writer.broken")
    event(log, "lost")
    handler.flush(5)
    assert _dropped_soon(handler, 1) == 1
    handler.close()


def test_flush_gives_up_on_a_stuck_stream_within_its_time() -> None:
    stream = StuckStream()
    handler = BackgroundStreamHandler(stream)
    event(_logger(handler, "test.writer.exit"), "last")
    assert stream.entered.wait(5)
    started = time.monotonic()
    handler.flush(0.2)
    assert time.monotonic() - started < 1.0
    stream.release.set()
    handler.close()


def test_the_dropped_lines_are_a_counter_on_metrics() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = BackgroundStreamHandler(io.StringIO())
    handler.dropped_total = 7
    try:
        root.handlers[:] = [handler]
        registry = CollectorRegistry()
        instrument(registry, "nerve")
        assert logs.lines_dropped() == 7
        assert "nerve_log_lines_dropped_total 7.0" in generate_latest(registry).decode()
    finally:
        root.handlers[:] = saved
        handler.close()


def test_no_stream_at_all_loses_the_lines_not_the_writer() -> None:
    """A daemon started with fd 2 closed has ``sys.stderr`` None: lines are counted."""
    handler = BackgroundStreamHandler(None)  # type: ignore[arg-type]
    log = _logger(handler, "test.writer.none")
    for n in range(3):
        event(log, "lost", n=n)
    assert _dropped_soon(handler, 3) == 3 and handler._thread is not None
    assert handler._thread.is_alive()
    handler.close()
