"""A start's validating child in a process that already has threads is spawned, not
forked (smartstack.config_child.ForkedValidation): a fork there can hang on what a thread
held (round 50's CI: a forked child spun tearing down an inherited gRPC object and the
test waited for ever). Same answer either way, the start's ``--fallback`` included; an
answer that does not come is an error answer, the child killed (real processes)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartstack import config_child

SYNAPSE = """
services:
  web:
    discovery: {method: zookeeper, hosts: "127.0.0.1:2181", path: /web}
    haproxy: {port: 3000}
"""
NERVE = """
instance_id: h1
services:
  web:
    host: 127.0.0.1
    port: 8080
    reporter_type: zookeeper
    zk_hosts: ["127.0.0.1:2181"]
    zk_path: /web
    check_interval: 1
    checks: [{type: tcp, timeout: 0.2}]
"""


@pytest.fixture
def a_thread() -> Iterator[threading.Thread]:
    """One more thread in this process while the test runs."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join()


def test_with_a_thread_running_synapse_s_start_spawns_and_gets_the_fork_s_answer(
    tmp_path: Path, a_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    from synapse.config_child import ForkedValidation

    path = tmp_path / "synapse.yaml"
    path.write_text(SYNAPSE)
    assert config_child.threads_running() > 1
    spawned = ForkedValidation(str(path), None, False)
    assert spawned.spawned is not None and spawned.spawned.args[:4] == [
        sys.executable, "-P", "-m", "synapse.config_child"
    ]  # fmt: skip
    answer = spawned.answer()
    assert spawned.spawned.returncode == 0
    monkeypatch.setattr(config_child, "threads_running", lambda: 1)  # as a daemon's start
    forked = ForkedValidation(str(path), None, False)
    assert forked.spawned is None and forked.pid > 0
    again = forked.answer()
    assert answer["ok"] and again["ok"]
    assert answer["digests"] == again["digests"] and set(answer["digests"]) == {"web"}
    assert answer["config"].services["web"].haproxy.port == 3000


def test_a_spawned_nerve_start_falls_back_to_the_last_good_copy(
    tmp_path: Path, a_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--fallback`` reaches the spawned child: a start with a broken file runs the copy
    (without it the answer would be the file's errors)."""
    from nerve.config_child import ForkedValidation

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    path = tmp_path / "nerve.yaml"
    path.write_text(NERVE)
    first = ForkedValidation(str(path), None, False, fallback=True)
    assert first.spawned is not None
    assert first.answer()["ok"]  # (its copy kept in $STATE_DIRECTORY)
    path.write_text(NERVE.replace("port: 8080", "port: eighty"))
    refused = ForkedValidation(str(path), None, False).answer()
    assert not refused["ok"] and any("port" in line for line in refused["lines"])
    start = ForkedValidation(str(path), None, False, fallback=True)
    assert start.spawned is not None
    answer = start.answer()
    assert answer["ok"] and answer["last_good"] is not None, answer
    assert answer["config"].services["web"].port == 8080


def test_a_child_that_does_not_answer_is_killed_and_said(
    a_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_child, "CHILD_TIMEOUT", 0.5)
    silent = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = config_child.ForkedValidation(lambda: {"ok": True}, lambda fd: silent)
    assert child.spawned is not None
    answer = child.answer()
    assert answer == {"ok": False, "lines": [config_child.TOOK_TOO_LONG]}
    assert child.spawned.returncode == -9  # killed and reaped: no child outlives the start


def test_a_child_that_answers_but_does_not_end_is_killed_and_said(
    a_thread: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer's first bytes do not stop the clock: a spawned child whose interpreter
    does not end after its answer (a hung atexit, a thread it waits for) is killed too."""
    monkeypatch.setattr(config_child, "CHILD_TIMEOUT", 1.0)
    lingers = "import os, pickle, sys, time; fd = int(sys.argv[1]); " \
        "os.write(fd, pickle.dumps({'ok': True})); os.close(fd); time.sleep(60)"  # fmt: skip
    child = config_child.ForkedValidation(
        lambda: {"ok": True}, lambda fd: [sys.executable, "-c", lingers, str(fd)]
    )
    began = time.monotonic()
    assert child.answer() == {"ok": False, "lines": [config_child.TOOK_TOO_LONG]}
    assert time.monotonic() - began < 5 and child.spawned.returncode == -9
    with pytest.raises(RuntimeError, match="taken already"):
        child.answer()
