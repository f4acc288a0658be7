"""The ZooKeeper reporter's watch on its own node (Ruby nerve's ``ping?`` read it every
cycle; a data watch costs no request until it fires).

- Our node deleted or replaced by another client while our session lives on: written
  again (``registration_vanished``).
- Our record held by a second nerve with our instance id (started while this one still
  runs), which deleted our node as its leftover or, under a fixed name, replaced it: this
  one stands aside (``registration_taken_over``) until its own next decision or session.
  Writing ours again would delete or replace the other's node in turn, for ever. It does
  not come back when the other withdraws: that may be an operator's ``nerve maint`` on
  the other nerve, which must win (a healthy instance left out is capacity; one served
  in maintenance fails requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent

from smartstack.logs import event

log = logging.getLogger("nerve.reporter.zookeeper")


class NodeWatch:
    """Mixed into ZooKeeperReporter (whose attributes and methods it uses)."""

    node: str | None
    czxid: int | None
    service: str
    conn: Any
    registered: bool
    successor: Any
    uncertain: bool
    _looks: set[asyncio.Task[None]]

    if TYPE_CHECKING:  # (the reporter's own: stubs here would shadow Reporter's in the MRO)

        async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...
        async def _copies(self, skip: str | None = None) -> list[tuple[str, Any]]: ...
        def registration_vanished(self, **where: Any) -> None: ...
        def wake(self) -> None: ...

    async def _watch_node(self) -> None:
        """Arm the data watch on our node and say whether it is still the one we wrote
        (``czxid``); deleted or replaced by another client while our session lives on, it
        is written again, unless another nerve holds our record."""
        node, czxid = self.node, self.czxid
        if node is None:
            return
        # A get, not an exists: on a missing node an exists leaves a watch (server and
        # kazoo) for the name to be created, and a sequential name never is: one watch
        # leaked per withdrawal or outside delete. A get that fails leaves none.
        try:
            data, stat = await self._call("get", node, watch=self._on_node_event)
        except NoNodeError:
            data, stat = None, None
        if node == self.node and (stat is None or czxid not in (None, stat.czxid)):
            if await self._held_elsewhere(node, replaced_by=stat if data == self.data else None):
                return
            self.registration_vanished(node=node)  # the reconcile's scan finds it gone

    async def _held_elsewhere(self, node: str, replaced_by: Any = None) -> bool:
        """Our node gone (or, ``replaced_by``: replaced, under a fixed name, by another
        session's node with our record), is our record still registered by another nerve
        with our instance id? Then this one stands aside (its node forgotten, not withdrawn
        later)."""
        if replaced_by is not None:
            # (a hand-over's successor on a new session: it is taking over, and the retire
            # leaves its node alone; a persistent node has no owner to tell apart)
            if self.successor is not None or replaced_by.ephemeralOwner in (0, self._session()):
                return False
            holder = node
        else:
            try:
                copies = await self._copies()
            except Exception:  # no answer: taken for gone, written again (the scan is safe)
                return False
            if not copies:
                return False
            holder = copies[0][0]
        event(log, "registration_taken_over", level=logging.WARNING, service=self.service,
              node=node, by=holder)  # fmt: skip
        self.node, self.czxid = None, None
        return True

    def _session(self) -> int | None:
        return self.conn.client.client_id[0] if self.conn.client.client_id else None

    def _on_node_event(self, watched: WatchedEvent) -> None:
        # kazoo's thread: hop to the loop. NONE: the session ended (_on_session handles it).
        if watched.type != EventType.NONE:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nerve is gone
                self.conn.loop.call_soon_threadsafe(self._node_changed, watched.path)

    def _node_changed(self, path: str) -> None:
        if path == self.node and self.registered:  # (our own withdraw's delete: node None)
            task = asyncio.get_running_loop().create_task(self._look_again(path))
            self._looks.add(task)
            task.add_done_callback(self._looks.discard)

    async def _look_again(self, path: str) -> None:
        try:
            await self._watch_node()  # re-armed: a watch fires once
        except Exception:  # no answer: the reconcile task scans, then watches again
            if path == self.node:
                self.uncertain = True
                self.wake()
