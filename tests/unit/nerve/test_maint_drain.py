"""``nerve maint --drain SECONDS``: the command returns that long after the registry has
the withdrawal (consumers' HAProxies act a moment after the registry), and fails at once
when the withdrawal is not written yet. (Real nerve and ZooKeeper:
tests/integration/nerve/test_maint_drain_zk.py.)"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pytest

from nerve import control

WITHDRAWN = {"service": "web", "wanted": False, "registered": False,
             "maintenance": {"reason": "deploy", "until": None}}  # fmt: skip
PENDING = {**WITHDRAWN, "registered": True, "registry": {"last_error": "connection loss"}}


def _maint(
    monkeypatch: pytest.MonkeyPatch, answer: dict[str, Any], *extra: str
) -> tuple[int, float]:
    """Run `nerve maint web ...` against a nerve answering ``answer``: its exit status and
    the seconds it took after that answer."""
    answered: list[float] = []

    def call(method: str, url: str, body: Any = None, token: Any = None, daemon: str = "") -> Any:
        assert (method, url) == ("POST", "http://127.0.0.1:1/maintenance/web")
        answered.append(time.monotonic())
        return answer

    monkeypatch.setattr(control, "call", call)
    argv = ["maint", "web", "--reason", "deploy", "--admin", "http://127.0.0.1:1", *extra]
    code = control.main(argv)
    return code, time.monotonic() - answered[0]


def test_drain_waits_after_the_withdrawal_is_written(monkeypatch, capsys):
    code, took = _maint(monkeypatch, WITHDRAWN, "--drain", "0.4")
    assert code == 0 and 0.4 <= took < 2.0
    out = capsys.readouterr().out.splitlines()
    assert out == ["web: in maintenance: deploy; not registered",
                   "web: drained 0.4s after the withdrawal"]  # fmt: skip


def test_no_drain_by_default(monkeypatch, capsys):
    code, took = _maint(monkeypatch, WITHDRAWN)
    assert code == 0 and took < 1.0
    assert capsys.readouterr().out == "web: in maintenance: deploy; not registered\n"


def test_a_withdrawal_not_written_yet_fails_at_once_without_draining(monkeypatch, capsys):
    code, took = _maint(monkeypatch, PENDING, "--drain", "5")
    assert code == control.EXIT_FAILED and took < 1.0
    out = capsys.readouterr()
    assert "registry write pending: connection loss" in out.out
    assert "not in the registry yet" in out.err


def test_parse_drain():
    assert control.parse_drain("0") == 0.0
    assert control.parse_drain("1.5") == 1.5
    assert control.parse_drain("2s") == 2.0
    for bad in ("-1", "x", "10m"):  # (10m: above MAX_DRAIN)
        with pytest.raises(argparse.ArgumentTypeError):
            control.parse_drain(bad)
