"""smartstack.stop_signals: from the stop on, SIGTERM, SIGINT and SIGHUP are logged, not
acted on; after the loop closed they are ignored."""

from __future__ import annotations

import logging
import signal

import pytest

from smartstack import stop_signals


class Loop:
    def __init__(self) -> None:
        self.handlers: dict[int, tuple[object, tuple[object, ...]]] = {}

    def add_signal_handler(self, signum: int, callback: object, *args: object) -> None:
        self.handlers[signum] = (callback, args)


def test_a_signal_during_the_stop_is_logged_and_a_second_stop_signal_ends_it(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended: list[signal.Signals] = []
    monkeypatch.setattr(stop_signals, "end_now", ended.append)
    loop = Loop()
    log = logging.getLogger("test.stop")
    stop_signals.hold_while_stopping(loop, log)  # type: ignore[arg-type]
    assert set(loop.handlers) == {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    with caplog.at_level(logging.WARNING, logger="test.stop"):
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGHUP):
            callback, args = loop.handlers[sig]
            callback(*args)  # type: ignore[operator]
        assert ended == []  # (a SIGHUP never counts; one SIGTERM is a supervisor's repeat)
        callback, args = loop.handlers[signal.SIGINT]
        callback(*args)  # type: ignore[operator]
    assert ended == [signal.SIGINT]
    noted = [r for r in caplog.records if r.message == "signal_while_stopping"]
    assert [r.smartstack_fields["signal"] for r in noted] == [  # type: ignore[attr-defined]
        "SIGHUP",
        "SIGTERM",
        "SIGHUP",
        "SIGINT",
    ]


def test_after_the_loop_the_signals_are_ignored() -> None:
    before = {sig: signal.getsignal(sig) for sig in stop_signals.AFTER_STOP}
    try:
        stop_signals.ignore_after_loop()
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in stop_signals.AFTER_STOP)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_nerve_s_restart_signal_is_held_during_the_stop_and_never_forces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGUSR2 (nerve's restart stop) sent again during a stop is logged, not its default
    action (which ends the process) and not counted as a stop signal sent again."""
    ended: list[signal.Signals] = []
    monkeypatch.setattr(stop_signals, "end_now", ended.append)
    loop = Loop()
    stop_signals.hold_while_stopping(loop, logging.getLogger("t"), (signal.SIGUSR2,))  # type: ignore[arg-type]
    for sig in (signal.SIGUSR2, signal.SIGUSR2, signal.SIGTERM, signal.SIGUSR2):
        callback, args = loop.handlers[sig]
        callback(*args)  # type: ignore[operator]
    assert ended == []  # (the one SIGTERM alone does not end it either)
    held = (*stop_signals.AFTER_STOP, signal.SIGUSR2)
    before = {sig: signal.getsignal(sig) for sig in held}
    try:
        stop_signals.ignore_after_loop((signal.SIGUSR2,))
        assert all(signal.getsignal(sig) is signal.SIG_IGN for sig in held)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_the_forcing_signal_calls_before_end_first_and_sighup_names_what_forces(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """synapse soft-stops its HAProxy before a forced end (it ran on, orphaned); a SIGHUP
    during the stop said "once more ends it now", which a SIGHUP never does."""
    order: list[str] = []
    monkeypatch.setattr(stop_signals, "end_now", lambda sig: order.append(f"end {sig.name}"))
    loop = Loop()
    log = logging.getLogger("test.force")
    stop_signals.hold_while_stopping(loop, log, before_end=lambda: order.append("before"))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="test.force"):
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGTERM):
            callback, args = loop.handlers[sig]
            callback(*args)  # type: ignore[operator]
    assert order == ["before", "end SIGTERM"]
    details = [r.smartstack_fields["detail"] for r in caplog.records]  # type: ignore[attr-defined]
    assert "once more" not in details[0] and "a SIGTERM or SIGINT ends it now" in details[0]
    assert "once more ends it now" in details[1]
