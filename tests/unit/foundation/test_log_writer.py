"""The log handler that never blocks its caller: a stuck stream queues lines up to the cap,
drops and counts the rest, says so once the stream moves, keeps the order."""

from __future__ import annotations

import io
import logging
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from smartstack import log_writer, logs
from smartstack.build_info import instrument
from smartstack.log_writer import CHUNK, BackgroundStreamHandler
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


def test_the_dropped_lines_are_a_counter_on_metrics(monkeypatch) -> None:
    """Every handler's drops: a second logs.setup does not reset the count."""
    monkeypatch.setattr(BackgroundStreamHandler, "dropped_in_process", 0)
    handler = BackgroundStreamHandler(BrokenStream())
    event(_logger(handler, "test.writer.metric"), "lost")
    assert _dropped_soon(handler, 1) == 1
    handler.close()
    registry = CollectorRegistry()
    instrument(registry, "nerve")
    assert logs.lines_dropped() == 1
    assert "nerve_log_lines_dropped_total 1.0" in generate_latest(registry).decode()


def test_no_stream_at_all_loses_the_lines_not_the_writer() -> None:
    """A daemon started with fd 2 closed has ``sys.stderr`` None: lines are counted."""
    handler = BackgroundStreamHandler(None)  # type: ignore[arg-type]
    log = _logger(handler, "test.writer.none")
    for n in range(3):
        event(log, "lost", n=n)
    assert _dropped_soon(handler, 3) == 3 and handler._thread is not None
    assert handler._thread.is_alive()
    handler.close()


class SlowStream(io.StringIO):
    """A reader that takes each write in 0.1 s (a slow journal): records the write sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, text: str) -> int:
        time.sleep(0.1)
        self.sizes.append(len(text))
        return super().write(text)


def test_writes_are_cut_at_line_ends_and_an_exit_waits_while_they_go_out() -> None:
    """No half line at an exit: writes of whole lines, <= CHUNK characters; the exit's wait
    goes on past EXIT_STALL while the slow reader keeps taking them."""
    stream = SlowStream()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "test.writer.slow")
    for n in range(60):
        event(log, "line", n=n, pad="x" * 80)  # ~150 characters a line: ~8 writes
    handler.flush(stall=0.5, most=5.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 60 and handler.dropped_total == 0
    assert len(stream.sizes) > 1 and max(stream.sizes) <= CHUNK
    assert stream.getvalue().endswith("\n")
    handler.close()


def test_the_dropped_line_comes_when_the_stream_moves_with_nothing_new_logged() -> None:
    stream = StuckStream()
    handler = BackgroundStreamHandler(stream, capacity=500)
    log = _logger(handler, "test.writer.notice")
    event(log, "first")
    assert stream.entered.wait(5)
    for n in range(50):
        event(log, "queued", n=n)
    stream.release.set()  # and nothing logged after
    handler.flush(5)
    assert "event=log_lines_dropped" in stream.getvalue().splitlines()[-1]
    handler.close()


def test_an_exit_with_a_long_backlog_keeps_warnings_and_the_newest_lines(monkeypatch) -> None:
    """Past EXIT_BACKLOG, the oldest info lines go first (counted, said first)."""
    monkeypatch.setattr(log_writer, "EXIT_BACKLOG", 2000)
    stream = StuckStream()
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "test.writer.backlog")
    event(log, "first")
    assert stream.entered.wait(5)
    for n in range(100):
        event(log, "old", n=n)
    event(log, "warned", logging.WARNING)
    event(log, "stopped")
    stream.release.set()
    handler.flush(5)
    text = stream.getvalue()
    assert "event=warned" in text and text.splitlines()[-1].endswith("event=stopped")
    kept = text.count("event=old")
    assert 0 < kept < 100 and handler.dropped_total == 100 - kept
    assert f"event=log_lines_dropped lines={100 - kept} " in text
    assert text.index("log_lines_dropped") < text.index("event=old")
    handler.close()


def test_a_failed_format_is_queued_not_printed(capsys) -> None:
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    _logger(handler, "test.writer.format").info("%d", "not a number")
    handler.flush(5)
    assert "--- logging error in test.writer.format" in stream.getvalue()
    assert capsys.readouterr().err == ""
    handler.close()


def test_a_plain_file_has_each_line_on_disk_when_emit_returns(tmp_path) -> None:
    """``2>>file`` on a disk that takes writes: each line is there when emit returns."""
    with (tmp_path / "daemon.log").open("w") as stream:
        handler = BackgroundStreamHandler(stream)
        log = _logger(handler, "test.writer.file")
        for name in ("first", "second"):
            event(log, name)
            assert (tmp_path / "daemon.log").read_text().endswith(f"event={name}\n")
        handler.close()


class StalledFile(StuckStream):
    """A plain file whose writes wait until ``release`` (a stalled disk: EBS, NFS)."""

    def __init__(self, path) -> None:
        super().__init__()
        self.file = path.open("w")

    def fileno(self) -> int:
        return self.file.fileno()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(10)
        self.file.write(text)
        self.file.flush()
        return len(text)


def test_a_stalled_disk_holds_a_caller_at_most_file_wait_once(tmp_path) -> None:
    """A plain file was written in the caller's thread: a stalled disk held nerve's event
    loop (a failed instance stayed registered for the whole stall, review s34)."""
    stream = StalledFile(tmp_path / "daemon.log")
    handler = BackgroundStreamHandler(stream)
    log = _logger(handler, "test.writer.stalled")
    caller = threading.Thread(target=lambda: [event(log, f"line{i}") for i in range(3)])
    started = time.monotonic()
    caller.start()
    caller.join(3)
    held = time.monotonic() - started
    stream.release.set()
    caller.join(10)
    assert held < log_writer.FILE_WAIT + 0.5  # once FILE_WAIT, not per line, not the stall
    handler.flush(5)
    lines = (tmp_path / "daemon.log").read_text().splitlines()
    assert [line.split("event=")[1] for line in lines] == ["line0", "line1", "line2"]
    event(log, "after")  # caught up: waited for again
    assert (tmp_path / "daemon.log").read_text().endswith("event=after\n")
    handler.close()
    stream.file.close()


def test_a_forked_child_writes_its_own_lines_to_a_plain_file(tmp_path) -> None:
    """A fork after the writer thread started (review s34): the child has no writer thread;
    its first line waited FILE_WAIT, set the file stalled for good, and no line of the child
    reached the file (before 2a38911 a child wrote a plain file itself)."""
    import os

    path = tmp_path / "daemon.log"
    with path.open("a") as stream:
        handler = BackgroundStreamHandler(stream)
        log = _logger(handler, "test.writer.fork")
        event(log, "parent")  # the writer thread runs
        handler.flush(5)
        pid = os.fork()
        if pid == 0:  # the child: its lines, without waiting out FILE_WAIT
            code = 1
            try:
                started = time.monotonic()
                event(log, "child_first")
                event(log, "child_second")
                held = time.monotonic() - started
                code = 0 if held < log_writer.FILE_WAIT / 2 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        event(log, "parent_after")
        handler.flush(5)
        handler.close()
    assert os.waitstatus_to_exitcode(status) == 0  # not held FILE_WAIT
    names = [line.split("event=")[1] for line in path.read_text().splitlines()]
    assert names == ["parent", "child_first", "child_second", "parent_after"]
