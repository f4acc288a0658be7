"""The ZooKeeper reporter's watch on its own node (Ruby nerve's ``ping?`` read it every
cycle; a data watch costs no request until it fires).

- Our node deleted or replaced by another client while our session lives on: written
  again (``registration_vanished``).
- Our node deleted as a leftover by a second nerve with our instance id, which now holds
  our record under its own node: this one stands aside (``registration_taken_over``),
  watching that node instead. When the other nerve withdraws it (it stops, or finds the
  service down) while this one still finds the service healthy, ours is written again
  (``registration_resumed``): the instance is not left out of every HAProxy.
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
    desired: bool
    holding: bool
    uncertain: bool
    _looks: set[asyncio.Task[None]]
    _holder: str | None = None  # standing aside: the other nerve's node holding our record

    if TYPE_CHECKING:  # (the reporter's own: stubs here would shadow Reporter's in the MRO)

        async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any: ...
        async def _copies(self, skip: str | None = None) -> list[tuple[str, Any]]: ...
        def registration_vanished(self, **where: Any) -> None: ...
        def mark_lost(self) -> None: ...
        def wake(self) -> None: ...

    async def _watch_node(self) -> None:
        """Arm the data watch on our node and say whether it is still the one we wrote
        (``czxid``); deleted by another client while our session lives on, it is written
        again."""
        node, czxid = self.node, self.czxid
        if node is None:
            return
        # A get, not an exists: on a missing node an exists leaves a watch (server and
        # kazoo) for the name to be created, and a sequential name never is: one watch
        # leaked per withdrawal or outside delete. A get that fails leaves none.
        try:
            _, stat = await self._call("get", node, watch=self._on_node_event)
        except NoNodeError:
            stat = None
        if node == self.node and (stat is None or czxid not in (None, stat.czxid)):
            if stat is None and await self._held_elsewhere(node):
                return
            self.registration_vanished(node=node)  # the reconcile's scan finds it gone

    async def _held_elsewhere(self, node: str) -> bool:
        """Our node gone, is our record still registered under another node? A second nerve
        with our instance id (started while this one still runs) deletes our node as its
        leftover; writing ours again would delete its node in turn, and the two would take
        turns for ever. The registration stands, so this one stands aside (its node
        forgotten, not withdrawn later), watching the other's node."""
        try:
            holder = await self._holding_node()
        except Exception:  # no answer: taken for gone, written again (the scan is safe)
            return False
        if holder is None:
            return False
        event(log, "registration_taken_over", level=logging.WARNING, service=self.service,
              node=node, by=holder)  # fmt: skip
        self.node, self.czxid = None, None
        return True

    async def _holding_node(self) -> str | None:
        """The other nerve's node holding our record, its watch armed (None: there is none)."""
        for _ in range(3):  # (a holder deleted between the listing and its watch: look again)
            copies = await self._copies()
            if not copies:
                return None
            self._holder = copies[0][0]
            try:
                await self._call("get", self._holder, watch=self._on_node_event)
            except NoNodeError:
                continue
            return self._holder
        return None

    def _aside(self) -> bool:
        """Standing aside: meant to be registered, our record held by another nerve's node."""
        return self.node is None and self.registered and self.desired and not self.holding

    def _on_node_event(self, watched: WatchedEvent) -> None:
        # kazoo's thread: hop to the loop. NONE: the session ended (_on_session handles it).
        if watched.type != EventType.NONE:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nerve is gone
                self.conn.loop.call_soon_threadsafe(self._node_changed, watched.path)

    def _node_changed(self, path: str) -> None:
        ours = path == self.node and self.registered  # (our own withdraw's delete: node None)
        if ours or (path == self._holder and self._aside()):
            task = asyncio.get_running_loop().create_task(self._look_again(path))
            self._looks.add(task)
            task.add_done_callback(self._looks.discard)

    async def _look_again(self, path: str) -> None:
        if path == self._holder and self.node is None:
            await self._look_at_holder()
            return
        try:
            await self._watch_node()  # re-armed: a watch fires once
        except Exception:  # no answer: the reconcile task scans, then watches again
            if path == self.node:
                self.uncertain = True
                self.wake()

    async def _look_at_holder(self) -> None:
        """The node we stood aside for changed: our record still held (by it, or another
        copy: watched in turn), stay aside; withdrawn, write ours again. No answer: stay
        aside (a lost session brings ours back anyway)."""
        with contextlib.suppress(Exception):
            if await self._holding_node() is None and self._aside():
                event(log, "registration_resumed", level=logging.WARNING,
                      service=self.service, by=self._holder)  # fmt: skip
                self._holder = None
                self.mark_lost()  # (the reconcile's scan finds no copy: ours is created)
