"""InlineHandler.select: kazoo's select answers, from a kept poll object (pipes, no socket)."""

from __future__ import annotations

import os

import pytest
from kazoo.handlers.utils import selector_select

from smartstack.kazoo_inline import _POLL, InlineHandler


class _File:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def _same(handler: InlineHandler, *args: object) -> tuple:
    """Ours and kazoo's answer to one select (on poll(): kazoo's handler's own way)."""
    return handler.select(*args), selector_select(*args, selectors_module=_POLL)


def test_answers_as_kazoos_select_and_keeps_one_poll_per_set_of_descriptors() -> None:
    handler = InlineHandler()
    r, w = os.pipe()
    try:
        rf, wf = _File(r), _File(w)
        ours, kazoos = _same(handler, [rf], [], [], 0)
        assert ours == kazoos == ([], [], [])  # nothing to read yet
        os.write(w, b"x")
        ours, kazoos = _same(handler, [rf], [wf], [], 0)
        assert ours == kazoos == ([rf], [wf], [])
        ours, _ = _same(handler, [rf], [], [], 0)
        assert ours == ([rf], [], []) and len(handler._polls.__dict__) == 2  # kept, by set
        os.close(w)
        w = -1
        os.read(r, 1)
        ours, kazoos = _same(handler, [rf], [], [], 0)  # the writer gone: a hang-up, readable
        assert ours == kazoos == ([rf], [], [])
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_closed_descriptor_fails_as_kazoos_select_does() -> None:
    with pytest.raises(TypeError):
        InlineHandler().select([_File(-1)], [], [], 0)
    with pytest.raises(ValueError):
        InlineHandler().select([], [], [], -1)
