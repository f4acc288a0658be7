"""nerve's own lack of resources (out of file descriptors, memory, processes) says nothing
about a service: a check that could not run gives no verdict, and a maintenance flag that
could not be read is unknown, not an order (no I/O: scripted checks and errors, a reporter
that records what it is told, flag files in tmp_path)."""

from __future__ import annotations

import asyncio
import errno
import logging
from pathlib import Path

import pytest
from nerve_fakes import Recorder

from nerve.checks.base import BaseCheck, CheckFailed, CheckResult, Passed
from nerve.checks.exec import ExecCheck
from nerve.checks.http import HttpCheck
from nerve.checks.tcp import TcpCheck
from nerve.maintenance import UNKNOWN, MaintenanceFlag, MaintenanceStore
from nerve.metrics import NerveMetrics
from nerve.service import Service
from smartstack.logs import _FIELDS as FIELDS

EMFILE = OSError(errno.EMFILE, "Too many open files")


def logged(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, object]]:
    """The fields of each ``name`` event logged."""
    return [vars(r).get(FIELDS, {}) for r in caplog.records if r.getMessage() == name]


class Raising(BaseCheck):
    type = "raising"

    def __init__(self, exc: BaseException) -> None:
        super().__init__("raising", 1.0)
        self.exc = exc

    async def probe(self) -> Passed:
        raise self.exc


def wrapped(cause: OSError) -> CheckFailed:
    """What the HTTP check raises for a connect that failed: CheckFailed from the OSError."""
    try:
        raise CheckFailed(f"Cannot connect to 127.0.0.1:80: {cause}") from cause
    except CheckFailed as exc:
        return exc


@pytest.mark.parametrize(
    "exc, verdict",
    [
        (EMFILE, False),  # nerve at its ulimit -n
        (OSError(errno.ENFILE, "Too many open files in system"), False),
        (OSError(errno.ENOBUFS, "No buffer space available"), False),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), False),
        (RuntimeError("can't start new thread"), False),  # nerve at its pids limit
        (wrapped(EMFILE), False),  # the HTTP check's connect
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"), False),  # no port
        (wrapped(OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")), False),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), True),
        (wrapped(ConnectionRefusedError(errno.ECONNREFUSED, "refused")), True),
        (CheckFailed("HTTP 503"), True),
        (OSError("Multiple exceptions: ..."), True),
        (RuntimeError("Event loop is closed"), True),
    ],
)
async def test_only_nerves_own_lack_of_resources_gives_no_verdict(
    exc: BaseException, verdict: bool
) -> None:
    result = await Raising(exc).run()
    assert not result.ok and result.verdict is verdict


async def test_an_exec_check_that_cannot_fork_gives_no_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_fork(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(asyncio.get_running_loop(), "subprocess_exec", no_fork)
    result = await ExecCheck("exec", "true", 1.0).run()
    assert not result.verdict and "cannot start the command" in result.detail


async def test_an_exec_check_whose_child_watcher_cannot_start_gives_no_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the pids limit the fork may pass and the thread asyncio starts to wait for the
    command fail (review: a healthy service withdrawn with `check exec-... down
    (RuntimeError: can't start new thread)`)."""

    async def no_thread(*args: object, **kwargs: object) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(asyncio.get_running_loop(), "subprocess_exec", no_thread)
    reporter = Recorder()
    reporter.holding = False
    web = Service("web", [ExecCheck("exec", "true", 1.0)], [(1, 1)], reporter, initially_up=True)
    web.state.registered = True
    await web.run_round()  # fall 1: a failure would withdraw it
    assert reporter.decisions == [] and web.state.registered
    assert web.no_verdict["exec"][1].detail == "RuntimeError: can't start new thread"


class Scripted:
    """Answers with the next of ``results``: True, False, or None for no verdict."""

    type = "scripted"
    timeout = 1.0

    def __init__(self, results: list[bool | None]) -> None:
        self.name = "scripted"
        self.results = results

    async def run(self) -> CheckResult:
        ok = self.results.pop(0)
        if ok is None:
            return CheckResult(False, "OSError: [Errno 24] Too many open files", 0.0, verdict=False)
        return CheckResult(ok, "scripted", 0.0)

    async def close(self) -> None:
        pass


def service(
    results: list[bool | None], rise: int, fall: int, up: bool, **kwargs: object
) -> Service:
    reporter = Recorder()
    reporter.holding = False
    web = Service("web", [Scripted(results)], [(rise, fall)], reporter, initially_up=up, **kwargs)
    web.state.registered = up
    return web


async def rounds(web: Service, n: int) -> list[bool]:
    for _ in range(n):
        await web.run_round()
    assert isinstance(web.reporter, Recorder)
    return web.reporter.decisions


@pytest.mark.parametrize("kind", ["http", "tcp"])
async def test_out_of_local_ports_keeps_a_healthy_service_registered(
    kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every local port toward the check's address held by TIME_WAIT sockets: connect()
    fails with EADDRNOTAVAIL. Before, a failure: measured in a netns with 101 local ports,
    2 checks every 0.1 s withdrew a healthy service after ~10 s, for as long as the ports
    stayed taken (/tmp/rev/s34/ports/repro_nerve_ports.py)."""

    async def no_port(self: object, sock: object, address: object) -> None:
        raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(type(loop), "sock_connect", no_port)
    check = (HttpCheck("c", "127.0.0.1", 1, "/health", 1.0) if kind == "http"
             else TcpCheck("c", "127.0.0.1", 1, 1.0))  # fmt: skip
    reporter = Recorder()
    reporter.holding = False
    web = Service("web", [check], [(1, 1)], reporter, initially_up=True)
    web.state.registered = True
    with caplog.at_level(logging.INFO, logger="nerve.service"):
        await web.run_round()  # fall 1: a failure would withdraw it
    assert reporter.decisions == [] and web.state.registered
    [line] = logged(caplog, "check_no_verdict")
    assert "ip_local_port_range" in str(line["error"])


async def test_no_verdict_keeps_a_registered_service_and_is_logged_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """fall 1: before, each EMFILE was a failure and withdrew the healthy service."""
    metrics = NerveMetrics()
    web = service([None, None, None, True], rise=1, fall=1, up=True, metrics=metrics)
    with caplog.at_level(logging.INFO, logger="nerve.service"):
        assert await rounds(web, 4) == []
    assert web.state.registered and web.state.healthy
    assert len(logged(caplog, "check_no_verdict")) == 1
    assert [e["missed"] for e in logged(caplog, "check_verdict_back")] == [3]
    counted = metrics.registry.get_sample_value(
        "nerve_check_results_total", {"service": "web", "check": "scripted", "result": "no_verdict"}
    )
    assert counted == 3


async def test_no_verdict_neither_breaks_nor_makes_a_streak() -> None:
    """Not counted at all: pass, none, pass is two passes in a row (rise 2), and fail,
    none, fail two failures in a row (fall 2)."""
    rising = service([True, None, True], rise=2, fall=2, up=False)
    assert await rounds(rising, 3) == [True]
    falling = service([False, None, False], rise=2, fall=2, up=True)
    assert await rounds(falling, 3) == [False]


async def test_a_leftover_is_held_through_rounds_without_a_verdict() -> None:
    """A restarted nerve holds a previous run's registration for `rise` rounds: rounds in
    which nerve could not probe do not count (before: a failure, withdrawn at once)."""
    reporter = Recorder()
    web = Service("web", [Scripted([None, None, None, True, True])], [(2, 2)], reporter)
    assert reporter.holding
    for _ in range(3):
        await web.run_round()
    assert reporter.holding and reporter.decisions == [] and reporter.held_rounds == 0
    await web.run_round()
    await web.run_round()
    assert reporter.decisions == [True]


def flag_file(tmp_path: Path, reason: str | None = "kernel upgrade") -> MaintenanceStore:
    store = MaintenanceStore(tmp_path)
    if reason is not None:
        MaintenanceStore(tmp_path).save("web", MaintenanceFlag(reason, 1.0, None))
    return store


def out_of_files(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    def emfile(self: Path, *args: object, **kwargs: object) -> str:
        raise OSError(errno.EMFILE, "Too many open files", str(self))

    if on:
        monkeypatch.setattr(Path, "read_text", emfile)
    else:
        monkeypatch.undo()


def test_a_flag_nerve_cannot_open_is_unknown_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "unreadable flag file", cached for the life of the process (/status showed
    the service in maintenance; a reload then withdrew it)."""
    store = flag_file(tmp_path, reason=None)
    out_of_files(monkeypatch, True)
    with caplog.at_level(logging.INFO, logger="nerve.maintenance"):
        assert store.load("web") is UNKNOWN
        assert store.load("web") is UNKNOWN
    out_of_files(monkeypatch, False)
    assert store.load("web") is None
    assert len(logged(caplog, "maintenance_flag_unknown")) == 1  # once per streak
    (tmp_path / "db.json").write_text("{not json")  # there, but broken: still an order
    broken = store.load("db")
    assert broken is not UNKNOWN and broken is not None and "unreadable" in broken.reason


async def test_a_service_mid_run_keeps_its_registration_while_its_flag_is_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flag_file(tmp_path, reason=None)
    web = service([True] * 3, rise=1, fall=1, up=True, maintenance=store)
    out_of_files(monkeypatch, True)
    assert await rounds(web, 2) == []
    assert web.status()["maintenance"] is None
    out_of_files(monkeypatch, False)
    await web.run_round()
    assert web.state.registered and not web.state.maintenance


@pytest.mark.parametrize("reason", ["kernel upgrade", None])
async def test_a_new_service_waits_for_a_flag_it_cannot_read_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str | None
) -> None:
    """At start the flag may say "stay out": no registration before it was read; once read,
    a flag puts the service in maintenance, no flag lets it register."""
    store = flag_file(tmp_path, reason)
    out_of_files(monkeypatch, True)
    web = service([True] * 3, rise=1, fall=1, up=False, maintenance=store)
    assert await rounds(web, 2) == []
    assert "maintenance flag can be read" in web.status()["reason"]
    out_of_files(monkeypatch, False)
    decisions = await rounds(web, 1)
    if reason is None:
        assert decisions == [True]
    else:
        assert decisions == [] and web.state.maintenance == {"admin": reason}


async def test_a_leftover_is_held_while_the_flag_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passing rounds that may not register (the flag unknown) do not use up the hold
    either: the leftover stays, and is taken over once the flag is read (none there)."""
    store = flag_file(tmp_path, reason=None)
    out_of_files(monkeypatch, True)
    reporter = Recorder()
    web = Service("web", [Scripted([True] * 4)], [(2, 2)], reporter, maintenance=store)
    for _ in range(3):
        await web.run_round()
    assert reporter.holding and reporter.decisions == []
    out_of_files(monkeypatch, False)
    await web.run_round()
    assert reporter.decisions == [True]
