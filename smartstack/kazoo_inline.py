"""kazoo's threading handler, minus one thread hop for callbacks that only hop to asyncio.

kazoo hands every watch event and every async result from its connection thread to a
worker thread (its callback and completion queues), which then runs our callback, which
only schedules the real work on the event loop (``call_soon_threadsafe``). That middle
thread costs a context switch and a GIL hand-over per event and per reply: three of them
on the path of one registry change (the watch, the children, the new child's data).
Callbacks marked with ``inline()`` run right in the connection thread instead; they must
never block. Any other callback (kazoo's recipes, user code) still goes through the queues.

The handler also caps kazoo's TCP connect (``CONNECT_TIMEOUT_CAP_S``).
"""

from __future__ import annotations

import logging
import math
import select
import selectors
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from kazoo.handlers.threading import AsyncResult, SequentialThreadingHandler
from kazoo.handlers.utils import fileobj_to_fd, selector_select

log = logging.getLogger("smartstack.zookeeper")

_MARK = "_smartstack_inline"
_POLL = SimpleNamespace(
    DefaultSelector=selectors.PollSelector,
    EVENT_READ=selectors.EVENT_READ,
    EVENT_WRITE=selectors.EVENT_WRITE,
)
F = TypeVar("F", bound=Callable[..., Any])


def inline(fn: F) -> F:
    """Mark a callback as safe to run in kazoo's connection thread (it never blocks)."""
    setattr(fn, _MARK, True)
    return fn


def _is_inline(fn: Any) -> bool:
    return getattr(fn, _MARK, False)


def _run(fn: Callable[..., Any], *args: Any) -> None:
    # An exception must not reach kazoo's connection loop (it would drop the connection).
    try:
        fn(*args)
    except Exception:
        log.exception("zookeeper callback failed")


class _InlineResult(AsyncResult):
    def _do_callbacks(self) -> None:
        # Called with the result's (reentrant) lock held, when the result is set or when a
        # callback is linked to a result already set: an inline callback runs once.
        mine = [cb for cb in self._callbacks if _is_inline(cb)]
        if mine:
            self._callbacks = [cb for cb in self._callbacks if not _is_inline(cb)]
            for callback in mine:
                _run(callback, self)
        super()._do_callbacks()


# kazoo gives a connect the whole session timeout. After a member goes silent (packets
# dropped, no RST) the missed heartbeat leaves about a third of the session: a retry that
# lands on that member, its SYNs dropped, would wait out the rest and the session expire.
# Giving up sooner moves on to the next member in time (measured in a network namespace,
# a silent member: 0 of 32 sessions lost against 4 of 22). A TLS handshake counts in it.
CONNECT_TIMEOUT_CAP_S = 1.5
POLLS_KEPT = 8  # poll objects kept per thread (kazoo's loop asks with 2-3 fd sets)


class InlineHandler(SequentialThreadingHandler):
    """SequentialThreadingHandler that runs ``inline()`` callbacks without its queues."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._polls = threading.local()

    def select(
        self, rlist: list[Any], wlist: list[Any], xlist: list[Any], timeout: float | None = None
    ) -> tuple[list[Any], list[Any], list[Any]]:
        """kazoo's select (what selector_select on poll() answers), with one ``select.poll``
        kept per set of descriptors: kazoo's loop selects on the same socket and wake-up
        pipe every turn, and building, filling and closing a selector each time was a fifth
        of its thread's time per registry event. poll() registers descriptor numbers and
        hands the kernel the whole list on every call, so a kept one stays right when a
        descriptor is closed and its number reused (a closed socket: kazoo's own way)."""
        try:
            rfds = tuple(fileobj_to_fd(f) for f in rlist)
            wfds = tuple(fileobj_to_fd(f) for f in wlist)
        except TypeError:  # a closed socket: kazoo's own select raises it, as before
            rfds = wfds = None  # type: ignore[assignment]
        if rfds is None or xlist or (timeout is not None and timeout < 0):
            return selector_select(rlist, wlist, xlist, timeout, selectors_module=_POLL)
        polls: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = self._polls.__dict__
        poller = polls.get((rfds, wfds))
        if poller is None:
            if len(polls) >= POLLS_KEPT:
                polls.clear()
            poller = polls[(rfds, wfds)] = select.poll()
            masks: dict[int, int] = {}
            for fd in rfds:
                masks[fd] = masks.get(fd, 0) | select.POLLIN
            for fd in wfds:
                masks[fd] = masks.get(fd, 0) | select.POLLOUT
            for fd, mask in masks.items():
                poller.register(fd, mask)
        ready = poller.poll(None if timeout is None else math.ceil(timeout * 1e3))
        readable: list[Any] = []
        writable: list[Any] = []
        for fd, events in ready:
            mine = [f for f, n in zip(rlist, rfds, strict=True) if n == fd]
            mine += [f for f, n in zip(wlist, wfds, strict=True) if n == fd]
            # As selector_select on poll(): anything but "writable" (data, hang-up, error)
            # reports every object of the descriptor readable; else writable.
            (readable if events & ~select.POLLOUT else writable).extend(mine)
        return readable, writable, []

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        """kazoo's connect, given up after at most CONNECT_TIMEOUT_CAP_S."""
        timeout = kwargs.get("timeout")
        if timeout is not None:
            kwargs["timeout"] = min(timeout, CONNECT_TIMEOUT_CAP_S)
        return super().create_connection(*args, **kwargs)

    def async_result(self) -> AsyncResult:
        return _InlineResult(self)

    def dispatch_callback(self, callback: Any) -> None:
        if _is_inline(callback.func):
            _run(callback.func, *callback.args)
        else:
            super().dispatch_callback(callback)
