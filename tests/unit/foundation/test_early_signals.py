"""smartstack.early_signals: a SIGHUP noted while starting is handed to the loop's handler
once, and only once."""

from __future__ import annotations

import signal

from smartstack import early_signals


class Loop:
    def __init__(self) -> None:
        self.handlers: dict[int, object] = {}

    def add_signal_handler(self, signum: int, callback: object) -> None:
        self.handlers[signum] = callback


def test_a_noted_sighup_reaches_the_loop_s_handler_once() -> None:
    before = signal.getsignal(signal.SIGHUP)
    try:
        early_signals.hold_sighup()
        assert signal.getsignal(signal.SIGHUP) is early_signals._note
        early_signals._note(signal.SIGHUP, None)
        calls: list[int] = []
        loop = Loop()
        early_signals.take_over_sighup(loop, lambda: calls.append(1))  # type: ignore[arg-type]
        assert calls == [1] and signal.SIGHUP in loop.handlers
        early_signals.take_over_sighup(loop, lambda: calls.append(2))  # type: ignore[arg-type]
        assert calls == [1]  # (none pending any more)
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_command_after_all_gets_sighup_back_with_the_one_noted_meanwhile() -> None:
    """release_sighup (-k, nerve maint/up, synapse zone): SIGHUP's disposition from before
    the cli module's hold is back, and a SIGHUP noted meanwhile reaches it once."""
    before = signal.getsignal(signal.SIGHUP)
    got: list[int] = []
    try:
        signal.signal(signal.SIGHUP, lambda signum, frame: got.append(signum))
        recorder = signal.getsignal(signal.SIGHUP)
        early_signals.hold_sighup()
        early_signals.hold_sighup()  # (check_or_run holds again: the first one's memory stays)
        early_signals._note(signal.SIGHUP, None)
        early_signals.release_sighup()
        assert signal.getsignal(signal.SIGHUP) is recorder
        assert got == [signal.SIGHUP]
        early_signals.release_sighup()
        assert got == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_sigusr2_noted_while_nerve_starts_becomes_its_restart_stop_once() -> None:
    """nerve.cli holds SIGUSR2 too: its default action killed nerve (exit -12) in its first
    0.1-0.3 s; noted, it reaches the loop's handler (the restart stop) once."""
    before = signal.getsignal(signal.SIGUSR2)
    try:
        early_signals.hold_sigusr2()
        assert signal.getsignal(signal.SIGUSR2) is early_signals._note
        signal.raise_signal(signal.SIGUSR2)  # (killed the test process before the hold)
        calls: list[int] = []
        loop = Loop()
        early_signals.take_over(loop, signal.SIGUSR2, lambda: calls.append(1))  # type: ignore[arg-type]
        assert calls == [1] and signal.SIGUSR2 in loop.handlers
        early_signals.take_over(loop, signal.SIGUSR2, lambda: calls.append(2))  # type: ignore[arg-type]
        assert calls == [1]
    finally:
        signal.signal(signal.SIGUSR2, before)
        early_signals._before.pop(signal.SIGUSR2, None)
