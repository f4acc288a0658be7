"""A SIGHUP that comes while a daemon starts is kept for its event loop, never fatal.

Until the loop installs its own handler, SIGHUP's default action ends the process: a deploy
that restarts a daemon and then asks it to reload (``systemctl restart x && systemctl
reload x``) killed nerve or synapse in their first second (the config's child, the imports;
Docker mode and an edge start the process again), and systemd counts a SIGHUP death as a
clean exit, so nothing restarted it. ``hold_sighup`` (the first statement of ``nerve.cli``
and ``synapse.cli``) notes one instead; ``take_over_sighup`` (once the loop runs) installs
the loop's handler and calls it at once for a noted one, so a file changed meanwhile is
still applied. ``release_sighup``: not a daemon after all (``-k``, a control command).

This module is imported before anything else of a daemon, so it imports only ``signal``
(asyncio alone takes 80-250 ms to import on a busy 2-core host). What is left is the
interpreter's own start: systemd's Type=notify (``smartstack.sd_notify``) and the image's
entrypoint (it ignores SIGHUP until this takes over) cover it.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False  # (typing itself is one of the imports this module avoids)
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from types import FrameType

_pending: set[int] = set()  # the held signals that came
# Each held signal's disposition before it was held (None: one that C code set)
_before: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}


def _note(signum: int, frame: FrameType | None) -> None:
    _pending.add(signum)


def _hold(signum: int) -> None:
    previous = signal.signal(signum, _note)
    if previous is not _note:  # (held twice: the first one knows what was there)
        _before[signum] = previous


def hold_sighup() -> None:
    _hold(signal.SIGHUP)


def hold_sigusr2() -> None:
    """nerve's restart stop: a SIGUSR2 while it starts ended it (exit -12, SIGUSR2's default
    action) instead of stopping it; noted, it is replayed once the loop runs."""
    _hold(signal.SIGUSR2)


def release_sighup() -> None:
    """The held signals' dispositions from before they were held again (SIGHUP's
    default if never held); one noted meanwhile acts now, as it would have (a hung-up
    terminal still ends ``nerve maint``)."""
    for signum in {signal.SIGHUP, *_before}:
        before = _before.get(signum, signal.SIG_DFL)
        signal.signal(signum, signal.SIG_DFL if before is None else before)
        if signum in _pending:
            _pending.discard(signum)
            signal.raise_signal(signum)


def ignore_sighup_across_exec() -> None:
    """Before ``os.execv``: an ignored signal stays ignored in the new program (a handler
    does not survive exec), until its own ``hold_sighup``."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def take_over_sighup(loop: asyncio.AbstractEventLoop, on_sighup: Callable[[], object]) -> None:
    take_over(loop, signal.SIGHUP, on_sighup)


def take_over(loop: asyncio.AbstractEventLoop, signum: int, handler: Callable[[], object]) -> None:
    """The loop's handler for ``signum`` from now on, called at once for one noted."""
    loop.add_signal_handler(signum, handler)
    if signum in _pending:
        _pending.discard(signum)
        handler()
