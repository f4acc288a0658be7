"""Which refused admin calls (401: no or a wrong token) are logged, and when.

A local client looping with a wrong token wrote ~2,000 ``admin_unauthorized`` lines a
second, ~1 GB of log an hour (review s44 apifuzz). So a caller, (method, route, address),
gets its first refusal logged at once (the audit line) and its repeats counted: one line
per REFUSED_LINE_S with the count (``refused``), also when the burst stops (a timer on the
loop; at the admin server's stop, what is left). The route, not the path: trying
``/maintenance/<anything>`` is one caller (keyed by path, 3,000 paths made 3,000 lines in
0.9 s; review s44 cr-small). At most REFUSED_KEYS callers are remembered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from smartstack.logs import event

log = logging.getLogger("smartstack.admin")

REFUSED_LINE_S = 10.0  # a caller refused again and again: one line per this many seconds
REFUSED_KEYS = 1_000  # callers remembered; past it, the quiet ones are forgotten first

Caller = tuple[str, str, "str | None"]  # (method, route, remote address)


@dataclass
class _Count:
    logged_at: float
    unsaid: int  # refusals since the last line
    path: str  # the last path refused (a line says one)


class Refusals:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._callers: dict[Caller, _Count] = {}
        self.timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def refused(self, method: str, route: str, path: str, remote: str | None) -> None:
        """One refusal: its line now, or counted into a later one."""
        caller, path = (method, route[:200], remote), path[:200]
        said = self.note(caller, path)
        if said:
            _line(caller, path, said)
        else:
            self.later()

    def note(self, caller: Caller, path: str = "") -> int:
        """Count one refusal; the refusals a line now stands for, or 0: no line now."""
        now = self.clock()
        count = self._callers.get(caller)
        if count is not None and now - count.logged_at < REFUSED_LINE_S:
            count.unsaid, count.path = count.unsaid + 1, path
            return 0
        if count is None and len(self._callers) >= REFUSED_KEYS:
            self._callers = {k: c for k, c in self._callers.items() if c.unsaid}
            if len(self._callers) >= REFUSED_KEYS:
                self._callers.clear()  # (many callers: each logs its next refusal anew)
        self._callers[caller] = _Count(now, 0, path)
        return (count.unsaid if count else 0) + 1

    def due(self, final: bool = False) -> tuple[list[tuple[Caller, str, int]], float | None]:
        """The callers whose unsaid refusals are now a line (with their last path and count;
        ``final``: all of them), and in how many seconds the next is (None: nothing
        unsaid). A caller quiet for a whole REFUSED_LINE_S is forgotten (its next refusal
        is said at once)."""
        now, lines, wait = self.clock(), [], None
        for caller, count in list(self._callers.items()):
            left = count.logged_at + REFUSED_LINE_S - now
            if count.unsaid and (left <= 0 or final):
                lines.append((caller, count.path, count.unsaid))
                count.logged_at, count.unsaid = now, 0  # (a steady loop: a line a period)
            elif left <= 0:
                del self._callers[caller]
            elif count.unsaid:
                wait = left if wait is None else min(wait, left)
        return lines, wait

    def flush(self, final: bool = False) -> None:
        """Log the lines that are due (``final``: all, the admin server stopping); again
        when the next is due (on the running loop)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        lines, wait = self.due(final)
        for caller, path, refused in lines:
            _line(caller, path, refused)
        if wait is not None:
            self.later(wait)

    def later(self, wait: float | None = None) -> None:
        wait = REFUSED_LINE_S if wait is None else wait
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test): said at the caller's next refusal
            return
        if self.timer is None or self._loop is not loop:  # (a timer of a closed loop: none)
            self.timer, self._loop = loop.call_later(wait, self.flush), loop


def _line(caller: Caller, path: str, refused: int) -> None:
    # Never the token (nor what was sent in its place) in the log.
    method, route, remote = caller
    event(log, "admin_unauthorized", level=logging.WARNING, method=method, path=path,
          route=route, remote=remote, refused=refused)  # fmt: skip


REFUSALS = Refusals()  # the process's (one admin server a daemon)
