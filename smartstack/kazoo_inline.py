"""kazoo's threading handler, minus one thread hop for callbacks that only hop to asyncio.

kazoo hands every watch event and every async result from its connection thread to a
worker thread (its callback and completion queues), which then runs our callback, which
only schedules the real work on the event loop (``call_soon_threadsafe``). That middle
thread costs a context switch and a GIL hand-over per event and per reply: three of them
on the path of one registry change (the watch, the children, the new child's data).
Callbacks marked with ``inline()`` run right in the connection thread instead; they must
never block. Any other callback (kazoo's recipes, user code) still goes through the queues.
"""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, TypeVar

from kazoo.handlers.threading import AsyncResult, SequentialThreadingHandler
from kazoo.handlers.utils import selector_select

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


class InlineHandler(SequentialThreadingHandler):
    """SequentialThreadingHandler that runs ``inline()`` callbacks without its queues."""

    def select(self, *args: Any, **kwargs: Any) -> Any:
        # kazoo's select, on poll(): its default makes (and closes) an epoll file descriptor
        # per call, several calls per request; poll() needs no descriptor of its own.
        return selector_select(*args, selectors_module=_POLL, **kwargs)

    def async_result(self) -> AsyncResult:
        return _InlineResult(self)

    def dispatch_callback(self, callback: Any) -> None:
        if _is_inline(callback.func):
            _run(callback.func, *callback.args)
        else:
            super().dispatch_callback(callback)
