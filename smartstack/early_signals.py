"""A SIGHUP that comes while a daemon starts is kept for its event loop, never fatal.

Until the loop installs its own handler, SIGHUP's default action ends the process: a deploy
that restarts a daemon and then asks it to reload (``systemctl restart x && systemctl
reload x``) killed nerve or synapse in their first second (the config's child, the imports;
Docker mode and an edge start the process again), and systemd counts a SIGHUP death as a
clean exit, so nothing restarted it. ``hold_sighup`` (at the start of the daemon path)
notes one instead; ``take_over_sighup`` (once the loop runs) installs the loop's handler
and calls it at once for a noted one, so a file changed meanwhile is still applied.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from types import FrameType

_pending = False


def _note(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def hold_sighup() -> None:
    signal.signal(signal.SIGHUP, _note)


def ignore_sighup_across_exec() -> None:
    """Before ``os.execv``: an ignored signal stays ignored in the new program (a handler
    does not survive exec), until its own ``hold_sighup``."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def take_over_sighup(loop: asyncio.AbstractEventLoop, on_sighup: Callable[[], object]) -> None:
    global _pending
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if _pending:
        _pending = False
        on_sighup()
