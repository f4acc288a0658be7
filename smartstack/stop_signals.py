"""Once a daemon stops, a stop signal sent again does not end it half way.

The default action of SIGTERM, SIGINT and SIGHUP ends the process. synapse gave SIGTERM
and SIGINT back to it when its stop began, so a second one (a supervisor that signals
twice, an impatient operator, our own demo) killed it mid-stop: a `stop_on_exit` HAProxy
it had not stopped yet ran on, orphaned, holding its ports (the next start: "port already
in use"); its state file unsaved. nerve handled a SIGHUP during its stop as a reload, and
both died by a late SIGTERM while the interpreter wound down (exit -15 after a clean stop).

Now, from the stop on, those signals are logged and the stop goes on: it is bounded by its
own timeouts (a sum of them for synapse: tens of seconds at worst). A deliberate third
SIGTERM or SIGINT (the second during the stop) still ends the daemon at once, as SIGKILL
does. After the loop closed (threads joined, logs flushed) they are ignored.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from smartstack import logs
from smartstack.logs import event

AFTER_STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


FORCE_AFTER = 2  # stop signals during the stop: the second ends the daemon at once


def hold_while_stopping(
    loop: asyncio.AbstractEventLoop,
    log: logging.Logger,
    also: tuple[signal.Signals, ...] = (),
    before_end: Callable[[], None] | None = None,
) -> None:
    """The stop begins: those signals (and ``also``, e.g. nerve's SIGUSR2) are logged from
    now on, not acted on (but the FORCE_AFTER-th SIGTERM/SIGINT: ``before_end`` is called,
    then the daemon ends, e.g. synapse's HAProxy is soft-stopped rather than orphaned)."""
    stops = [0]
    for sig in (*AFTER_STOP, *also):
        loop.add_signal_handler(sig, _noted, log, sig, stops, before_end)


def _noted(
    log: logging.Logger,
    sig: signal.Signals,
    stops: list[int],
    before_end: Callable[[], None] | None = None,
) -> None:
    forcing = sig in (signal.SIGTERM, signal.SIGINT)
    if forcing:
        stops[0] += 1
    if stops[0] >= FORCE_AFTER and forcing:
        event(log, "signal_while_stopping", level=logging.WARNING, signal=sig.name,
              detail="sent again: the daemon ends now, its stop cut short")  # fmt: skip
        try:
            if before_end is not None:
                before_end()
        finally:  # (it ends whatever happened)
            end_now(sig)
        return
    more = "once more ends it now" if forcing else "a SIGTERM or SIGINT ends it now"
    event(log, "signal_while_stopping", level=logging.WARNING, signal=sig.name,
          detail=f"the stop goes on (bounded by its timeouts; {more})")  # fmt: skip


def end_now(sig: signal.Signals) -> None:
    """``sig``'s default action, at once (the lines logged so far get up to 0.5 s)."""
    logs.flush(most=0.5)  # the writer thread's lines (log_writer.py)
    signal.signal(sig, signal.SIG_DFL)
    signal.raise_signal(sig)


def ignore_after_loop(also: tuple[signal.Signals, ...] = ()) -> None:
    """The loop is closed (its handlers gone): the rest of the exit ignores those signals."""
    for sig in (*AFTER_STOP, *also):
        signal.signal(sig, signal.SIG_IGN)
