"""smartstack.kazoo_conn.leave with a request still queued: the request is sent, then the
next pass drops the connection (the session left, not closed). The batch loop used to ask
the leave sentinel for its ``type``: an AttributeError killed kazoo's connection thread
and the queued request was never sent."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from kazoo.exceptions import ConnectionDropped
from kazoo.protocol.serialization import Exists
from kazoo_fakes import send_only_connection as connection

from smartstack.kazoo_conn import _LEAVE


def test_a_request_queued_before_leave_is_sent_then_the_connection_dropped() -> None:
    queue: collections.deque[Any] = collections.deque([(Exists("/x", False), object())])
    queue.append((_LEAVE, None))
    conn, written = connection(queue)
    conn._send_request(1.0, 1.0)  # (raised AttributeError: 'object' object has no 'type')
    assert len(written) == 1 and b"/x" in written[0]
    assert [r for r, _ in queue] == [_LEAVE] and len(conn.client._pending) == 1
    with pytest.raises(ConnectionDropped):
        conn._send_request(1.0, 1.0)
    assert not queue
