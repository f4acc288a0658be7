"""Two operators' maintenance on one service: the second `nerve maint` joins the first (both
reasons, the later end) instead of replacing it, and `nerve up` ends both, saying whose it
ended. (Real nerve, ZooKeeper and the command: tests/integration/nerve/test_maint_operators.py.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from nerve_fakes import Recorder

from nerve import control, maintenance
from nerve.maintenance import MaintenanceFlag, MaintenanceStore
from nerve.service import Service
from smartstack.logs import _FIELDS as FIELDS


def test_a_joined_flag_keeps_both_reasons_and_the_later_end() -> None:
    repair = MaintenanceFlag("disk swap", 100.0, None)  # until `nerve up`
    assert repair.joined("deploy", 200.0) == MaintenanceFlag("disk swap | deploy", 100.0, None)
    canary = MaintenanceFlag("canary", 100.0, 500.0)
    assert canary.joined("deploy", 300.0).until == 500.0
    assert canary.joined("deploy", 900.0).until == 900.0
    assert canary.joined("deploy", None).until is None
    assert canary.joined("canary", 300.0).reason == "canary"  # the same reason once


def test_joined_reasons_stay_bounded() -> None:
    flag = MaintenanceFlag("repair", 0.0)
    for n in range(50):  # a deploy script's `maint` every run, nobody running `up`
        flag = flag.joined(f"deploy {n} " + "x" * 400, None)
    assert len(flag.reason) <= maintenance.MAX_JOINED
    assert flag.reason.startswith("repair | ") and flag.reason.endswith("deploy 49 " + "x" * 400)


def _service(tmp_path: Path) -> tuple[Service, Recorder, MaintenanceStore]:
    store, reporter = MaintenanceStore(tmp_path), Recorder()
    return Service("web", [], [], reporter, maintenance=store), reporter, store


async def test_a_second_maint_joins_the_first_and_up_ends_both(tmp_path: Path) -> None:
    service, reporter, store = _service(tmp_path)
    assert service.enter_maintenance("disk swap") is None  # nothing to join
    joined = service.enter_maintenance("deploy", duration=0.05)
    assert joined is not None and (joined.reason, joined.until) == ("disk swap", None)
    flag = store.load("web")
    assert isinstance(flag, MaintenanceFlag)
    assert (flag.reason, flag.until, flag.since) == ("disk swap | deploy", None, joined.since)
    assert MaintenanceStore(tmp_path).load("web") == flag  # on disk: a restart keeps both
    await asyncio.sleep(0.1)
    await service.run_round()  # the second one's 0.05 s are over: the first still holds
    assert reporter.decisions == [False]
    assert service.status()["maintenance"]["reason"] == "disk swap | deploy"
    assert service.leave_maintenance() == flag  # `up` ends every operator's maintenance
    assert store.load("web") is None and MaintenanceStore(tmp_path).load("web") is None
    await service.run_round()
    assert reporter.decisions == [False, True]


async def test_a_maintenance_that_ran_out_is_not_joined(tmp_path: Path) -> None:
    service, _, store = _service(tmp_path)
    service.enter_maintenance("canary", duration=0.01)
    await asyncio.sleep(0.05)
    assert service.enter_maintenance("deploy", duration=60) is None
    flag = store.load("web")
    assert isinstance(flag, MaintenanceFlag) and flag.reason == "deploy"
    assert flag.until is not None


def _command(monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], *argv: str) -> int:
    monkeypatch.setattr(control, "call", lambda *args, **kwargs: answer)
    return control.main([*argv, "--admin", "http://127.0.0.1:1"])


def test_the_commands_say_whose_maintenance_they_joined_or_ended(monkeypatch, capsys) -> None:
    on = {"service": "web", "wanted": False, "registered": False,
          "maintenance": {"reason": "disk swap | deploy", "until": None},
          "joined": {"reason": "disk swap", "since": 1.0, "until": None}}  # fmt: skip
    assert _command(monkeypatch, on, "maint", "web", "--reason", "deploy", "--for", "3s") == 0
    assert capsys.readouterr().out.splitlines() == [
        "web: joined the maintenance already on (no end): disk swap; the later end holds, "
        "`nerve up` ends both",
        "web: in maintenance: disk swap | deploy; not registered",
    ]
    off = {"service": "web", "wanted": True, "registered": True, "maintenance": None,
           "ended": {"reason": "disk swap | deploy", "since": 1.0, "until": None}}  # fmt: skip
    assert _command(monkeypatch, off, "up", "web") == 0
    assert capsys.readouterr().out.splitlines() == [
        "web: ended the maintenance: disk swap | deploy",
        "web: not in maintenance; registered",
    ]


async def test_a_maint_on_an_unreadable_flag_replaces_it_so_its_for_ends_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stand-in for an unreadable flag has no end: joined, `nerve maint web --for 600`
    would have saved no end either, and the service stayed out until `nerve up`."""
    (tmp_path / "web.json").write_text("{not json")  # e.g. half-written on a full disk
    caplog.set_level(logging.INFO, logger="nerve.service")
    service, reporter, store = _service(tmp_path)
    assert service.enter_maintenance("deploy", duration=0.05) is None  # nothing joined
    flag = MaintenanceStore(tmp_path).load("web")  # on disk: the file is readable again
    assert isinstance(flag, MaintenanceFlag) and flag.reason == "deploy"
    assert flag.until is not None and store.load("web") == flag
    [on] = [vars(r)[FIELDS] for r in caplog.records if r.getMessage() == "maintenance_on"]
    assert on["replaced"] == f"unreadable flag file {tmp_path / 'web.json'}"
    assert "joined" not in on
    await asyncio.sleep(0.1)
    await service.run_round()  # its 0.05 s are over: registered again
    assert reporter.decisions == [False, True]
    assert store.load("web") is None and not (tmp_path / "web.json").exists()


def test_a_clock_step_neither_ends_nor_stretches_a_timed_maintenance() -> None:
    # NTP steps the wall clock: the end is counted on the monotonic clock from the time
    # left when the flag was first seen, and never more than the flag's whole length.
    flag = MaintenanceFlag("kernel upgrade", since=1000.0, until=2800.0)  # 30 minutes
    end = maintenance.MaintenanceEnd()
    assert not end.over(flag, monotonic_now=50.0, wall_now=1001.0)
    assert not end.over(flag, monotonic_now=51.0, wall_now=1002.0 + 3600)  # +1 h step
    assert not end.over(flag, monotonic_now=50.0 + 1798.0, wall_now=0.0)  # -1 h and more
    assert end.over(flag, monotonic_now=50.0 + 1799.0, wall_now=0.0)
    # a flag found after a backward step (wall_now before since) lasts its length at most
    late = maintenance.MaintenanceEnd()
    assert not late.over(flag, monotonic_now=0.0, wall_now=1000.0 - 3600)
    assert late.over(flag, monotonic_now=1800.0, wall_now=1000.0 - 1800)
    # a joined flag whose end moved later is timed again; no end is never over
    longer = flag.joined("deploy", 4600.0)
    assert not end.over(longer, monotonic_now=50.0 + 1799.0, wall_now=2799.0)
    assert end.over(longer, monotonic_now=50.0 + 1799.0 + 1801.0, wall_now=0.0)
    assert not end.over(MaintenanceFlag("repair", 1000.0), monotonic_now=1e9, wall_now=1e9)


async def test_a_forward_clock_step_does_not_end_the_maintenance(tmp_path: Path, monkeypatch):
    service, reporter, store = _service(tmp_path)
    service.enter_maintenance("kernel upgrade", duration=1800)
    await service.run_round()
    wall = maintenance.time.time() + 3600  # NTP corrects the clock an hour ahead
    monkeypatch.setattr("nerve.service.time.time", lambda: wall)
    await service.run_round()
    assert isinstance(store.load("web"), MaintenanceFlag)
    assert reporter.decisions == [False] and service.status()["maintenance"] is not None


@pytest.mark.parametrize("step", [3600.0, -3600.0])
async def test_a_maintenance_joined_after_a_clock_step_keeps_the_first_end(
    tmp_path: Path, monkeypatch, step: float
) -> None:
    # The first operator's 30 minutes are timed on the monotonic clock; a second `maint
    # --for 10m` after NTP stepped the wall clock neither replaces them (as if ran out) nor
    # ends at once (a start now in the future).
    service, reporter, store = _service(tmp_path)
    service.enter_maintenance("kernel upgrade", duration=1800)
    await service.run_round()
    wall = maintenance.time.time() + step
    monkeypatch.setattr("nerve.service.time.time", lambda: wall)
    joined = service.enter_maintenance("deploy", duration=600)
    assert joined is not None and joined.reason == "kernel upgrade"
    flag = store.load("web")
    assert isinstance(flag, MaintenanceFlag) and flag.reason == "kernel upgrade | deploy"
    assert flag.until is not None and 1790 < flag.until - wall <= 1800
    await service.run_round()
    assert reporter.decisions == [False] and isinstance(store.load("web"), MaintenanceFlag)


def test_a_flag_saved_in_this_boot_is_timed_on_its_clock_after_a_restart(tmp_path: Path) -> None:
    """The flag file keeps the end on the boot's clock too (CLOCK_BOOTTIME, with the boot's
    id): a nerve restarted in the same boot counts on it, whatever the wall clock did while
    nerve was down; after a reboot (another id) or from an older nerve's flag, the wall
    clock's rule stands."""
    boot = {"now": 500.0, "id": "boot-1"}
    saver = maintenance.MaintenanceEnd(lambda: boot["now"], lambda: boot["id"])
    flag = saver.saved(MaintenanceFlag("repair", 1000.0, 1000.0 + 3600), wall_now=1000.0)
    MaintenanceStore(tmp_path).save("web", flag)
    on_disk = json.loads((tmp_path / "web.json").read_text())
    assert on_disk.keys() >= {"reason", "since", "until"}  # (what an older nerve reads)
    read = MaintenanceStore(tmp_path).load("web")
    assert isinstance(read, MaintenanceFlag) and read == flag

    def restarted(after: float, wall_now: float) -> maintenance.MaintenanceEnd:
        boot["now"] = 500.0 + after
        return maintenance.MaintenanceEnd(lambda: boot["now"], lambda: boot["id"])

    # stopped 60 s, the clock +61 min: 59 min left, not 0
    end = restarted(60, wall_now=1000.0 + 60 + 3660)
    assert end.left(read, monotonic_now=0.0, wall_now=1000.0 + 60 + 3660) == 3540.0
    # stopped 60 s, the clock -1 day: 59 min left, not the whole hour
    end = restarted(60, wall_now=1000.0 + 60 - 86400)
    assert end.left(read, monotonic_now=0.0, wall_now=1000.0 + 60 - 86400) == 3540.0
    boot["id"] = "boot-2"  # a reboot: the wall clock's rule (a step ahead ends it)
    end = restarted(-470, wall_now=1000.0 + 60 + 3660)
    assert end.left(read, monotonic_now=0.0, wall_now=1000.0 + 60 + 3660) == 0.0
    older = MaintenanceFlag("repair", 1000.0, 1000.0 + 3600)  # an older nerve's flag
    boot["id"] = "boot-1"
    end = restarted(60, wall_now=1000.0 + 1800)
    assert end.left(older, monotonic_now=0.0, wall_now=1000.0 + 1800) == 1800.0
    assert saver.saved(MaintenanceFlag("repair", 1000.0), 1000.0).boot_until is None  # no end
