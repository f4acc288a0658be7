"""smartstack.kazoo_inline: marked callbacks run at once and once; the others are queued."""

from __future__ import annotations

from kazoo.protocol.states import Callback

from smartstack.kazoo_inline import InlineHandler, inline


class Recorder:
    def __init__(self) -> None:
        self.calls: list[object] = []

    def __call__(self, *args: object) -> None:
        self.calls.append(args)


def running_handler() -> InlineHandler:
    """A handler that believes it runs, without its worker threads: queued work stays queued."""
    handler = InlineHandler()
    handler._running = True
    return handler


def test_inline_result_callback_runs_in_the_setting_thread_once() -> None:
    handler = running_handler()
    result = handler.async_result()
    seen: list[object] = []
    result.rawlink(inline(lambda r: seen.append(r.get_nowait())))
    queued = Recorder()
    result.rawlink(queued)
    result.set(42)
    assert seen == [42]
    assert handler.completion_queue.qsize() == 1  # the unmarked one waits for the worker
    result.rawlink(queued)  # linking again after the value: the inline one is not re-run
    assert seen == [42]


def test_inline_callback_linked_after_the_value_runs_at_once() -> None:
    handler = running_handler()
    result = handler.async_result()
    result.set_exception(ValueError("gone"))
    errors: list[str] = []

    def _done(r) -> None:
        try:
            r.get_nowait()
        except ValueError as exc:
            errors.append(str(exc))

    result.rawlink(inline(_done))
    assert errors == ["gone"]


def test_failing_inline_callback_does_not_escape() -> None:
    handler = running_handler()
    result = handler.async_result()

    def _boom(_r) -> None:
        raise RuntimeError("loop closed")

    result.rawlink(inline(_boom))
    result.set(1)  # must not raise into kazoo's connection thread
    assert result.get_nowait() == 1


def test_watch_callbacks_inline_or_queued() -> None:
    handler = running_handler()
    marked, plain = Recorder(), Recorder()
    handler.dispatch_callback(Callback("watch", inline(marked), ("event",)))
    handler.dispatch_callback(Callback("watch", plain, ("event",)))
    assert marked.calls == [("event",)]
    assert plain.calls == [] and handler.callback_queue.qsize() == 1
