"""A config file read while another writer is still at it (smartstack.config_read).

A deploy tool rewriting a file in place leaves a prefix there for a while; a YAML prefix
cut at a line end is valid YAML, and a SIGHUP read applied it (review s21: synapse dropped
a service and reloaded HAProxy without it, nerve withdrew a healthy instance). The read
now waits for the writer, within a bound, and refuses the file after it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from smartstack import config_read
from smartstack.configfile import ConfigError, load_document

FULL = "alpha: 1\nbravo: 2\ncharlie: 3\n"
CUT = FULL.index("charlie")  # a prefix that is valid YAML: alpha and bravo only


@contextmanager
def slow_writer(path: Path, stall: float, close_between: bool = False) -> Iterator[None]:
    """Rewrite ``path`` in place: the prefix, ``stall`` s, the rest (in a thread). With
    ``close_between`` the rest is a second writer (a shell's ``>`` then ``>>``)."""
    started = threading.Event()

    def write() -> None:
        file = path.open("w")
        file.write(FULL[:CUT])
        file.flush()
        if close_between:
            file.close()
        started.set()
        time.sleep(stall)
        if close_between:
            file = path.open("a")
        file.write(FULL[CUT:])
        file.close()

    thread = threading.Thread(target=write)
    thread.start()
    started.wait(5)
    try:
        yield
    finally:
        thread.join()


def old_file(path: Path, text: str) -> None:
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def test_a_file_open_for_writing_is_read_once_its_writer_is_done(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    old_file(path, FULL)
    with slow_writer(path, stall=0.6):
        started = time.monotonic()
        doc = load_document(path)
    assert doc == {"alpha": 1, "bravo": 2, "charlie": 3}
    assert time.monotonic() - started >= 0.5  # it waited for the rest


def test_a_writer_that_does_not_finish_gets_the_file_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_read, "WAIT_MAX_S", 0.4)
    path = tmp_path / "synapse.yaml"
    with slow_writer(path, stall=1.0), pytest.raises(ConfigError) as refused:
        load_document(path)
    assert refused.value.lines == [
        f"{path}: file still being written after 0.4 s (another process has it open for "
        "writing): write a new file and rename it over the old one"
    ]


def test_without_the_kernel_s_word_a_short_pause_in_the_writing_is_waited_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not the file's owner: Linux will not say whether a writer has it open. The settle
    # still covers a writer pausing less than SETTLE_S.
    monkeypatch.setattr(config_read, "open_for_writing", lambda fd: None)
    path = tmp_path / "synapse.yaml"
    with slow_writer(path, stall=config_read.SETTLE_S / 2):
        doc = load_document(path)
    assert doc == {"alpha": 1, "bravo": 2, "charlie": 3}


def test_two_writers_one_after_the_other_are_waited_out(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    with slow_writer(path, stall=config_read.SETTLE_CLOSED_S / 2, close_between=True):
        doc = load_document(path)
    assert doc == {"alpha": 1, "bravo": 2, "charlie": 3}


def test_a_file_last_changed_a_while_ago_is_read_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nerve.yaml"
    old_file(path, FULL)
    monkeypatch.setattr(config_read.time, "sleep", lambda s: pytest.fail(f"slept {s}"))
    assert load_document(path) == {"alpha": 1, "bravo": 2, "charlie": 3}


def test_a_still_file_with_an_mtime_in_the_future_is_read(tmp_path: Path) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_text(FULL)
    future = time.time() + 3600  # (a clock stepped back since it was written)
    os.utime(path, (future, future))
    assert load_document(path) == {"alpha": 1, "bravo": 2, "charlie": 3}


def test_files_stamped_before_the_clock_stepped_back_are_read_without_a_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every file written in the hour before a -1 h step has an mtime ahead of the clock:
    # one settle wait each was 300 service files read in 75.4 s by a daemon that does not
    # own them (15.2 s when it does), past CHILD_TIMEOUT (a SIGHUP rejected) from ~480.
    monkeypatch.setattr(config_read, "open_for_writing", lambda fd: None)
    paths = []
    for i in range(20):
        path = tmp_path / f"s{i}.yaml"
        path.write_text(FULL)
        future = time.time() + 3600
        os.utime(path, (future, future))
        paths.append(path)
    monkeypatch.setattr(config_read.time, "sleep", lambda s: pytest.fail(f"slept {s}"))
    assert all(load_document(p) == {"alpha": 1, "bravo": 2, "charlie": 3} for p in paths)


def test_a_file_stamped_ahead_is_still_waited_for_while_a_writer_has_it_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "nerve.yaml"
    path.write_text(FULL)
    future = time.time() + 3600
    os.utime(path, (future, future))
    answers = iter([True, False, False])  # a writer has it open at the first read only
    monkeypatch.setattr(config_read, "open_for_writing", lambda fd: next(answers))
    slept: list[float] = []
    monkeypatch.setattr(config_read.time, "sleep", slept.append)
    assert load_document(path) == {"alpha": 1, "bravo": 2, "charlie": 3}
    assert slept == [config_read.POLL_S]


def test_a_pipe_is_read_once(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, FULL.encode())
    os.close(write_end)
    try:
        assert load_document(Path(f"/dev/fd/{read_end}")) == {
            "alpha": 1,
            "bravo": 2,
            "charlie": 3,
        }
    finally:
        os.close(read_end)
