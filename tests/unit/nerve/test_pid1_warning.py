"""nerve as PID 1 (no init in its container) with an exec check: one warning at start
(``os.getpid`` scripted; nothing is run)."""

from __future__ import annotations

import logging

import pytest

from nerve.checks import exec as exec_check
from nerve.checks.exec import ExecCheck


def warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "nerve_is_pid1"]


@pytest.mark.parametrize("pid, expected", [(1, 1), (4242, 0)])
def test_an_exec_check_built_as_pid_1_warns_once(
    pid: int, expected: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(exec_check.os, "getpid", lambda: pid)
    monkeypatch.setattr(exec_check, "_pid1_warned", False)
    caplog.set_level(logging.WARNING, logger="nerve.checks")
    for name in ("disk", "queue"):  # two checks, a SIGHUP later: still one line
        ExecCheck(name, "true", 1.0)
    assert len(warnings(caplog)) == expected
    if expected:
        assert warnings(caplog)[0].levelno == logging.WARNING
