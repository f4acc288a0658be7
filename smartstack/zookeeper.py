"""ZooKeeper connections shared by every service that uses the same ensemble.

kazoo runs its own threads. Everything here hands results and events to the
asyncio loop with ``call_soon_threadsafe`` so daemon code stays single-threaded
and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadArgumentsError, UnimplementedError
from kazoo.protocol.states import KazooState, KeeperState, WatchedEvent
from kazoo.retry import KazooRetry
from kazoo.security import ACL, READ_ACL_UNSAFE, make_acl, make_digest_acl

from smartstack import kazoo_conn
from smartstack.kazoo_bulk import WakeBatcher
from smartstack.kazoo_inline import InlineHandler, inline
from smartstack.logs import KazooLog, event
from smartstack.zk_credentials import auth_options, refusal
from smartstack.zk_multiread import GET_CHILDREN, GET_DATA, ReadBatcher
from smartstack.zk_persistent import TreeRouter, start_add_watch, start_remove_watch
from smartstack.zk_prefetch import Prefetch
from smartstack.zk_session import SessionTimeout

log = logging.getLogger("smartstack.zookeeper")

StateListener = Callable[[str], None]  # "connected", "new_session", "suspended", "lost"


def connection_string(hosts: list[str]) -> str:
    """Sorted so that the same ensemble written in another order shares a connection."""
    return ",".join(sorted(hosts))


class ZooKeeperConnection:
    """One kazoo session; async calls and loop-side state events."""

    def __init__(
        self,
        hosts: list[str],
        loop: asyncio.AbstractEventLoop,
        session_timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.hosts = connection_string(hosts)
        self.loop = loop
        self.session = SessionTimeout(session_timeout, self.hosts)  # asked; granted: handshakes
        self.auth = auth
        self.auth_error: str | None = None  # the credential was refused: for good (kazoo)
        self._listeners: list[StateListener] = []
        self._session_id: int | None = None
        self.reconnects = 0
        self.announced = False  # listeners were told "connected" (loop side) and no loss since
        self.multi_read: bool | None = None  # the server answers multi-reads (None: unknown)
        self.persistent_watches: bool | None = None  # the server takes addWatch (None: unknown)
        # kazoo's own lines name this ensemble; its per-attempt failures are logged once.
        self.kazoo_log = KazooLog(self.hosts)
        options = auth_options(auth)
        self.client = KazooClient(
            logger=self.kazoo_log,
            hosts=self.hosts,
            handler=InlineHandler(),  # our callbacks only hop to the loop: no worker thread
            timeout=session_timeout,
            # Retry the connection forever with capped backoff: nerve and synapse never give up.
            connection_retry=KazooRetry(max_tries=-1, delay=0.1, backoff=2, max_delay=2.0),
            command_retry=KazooRetry(max_tries=0),
            **options,
        )
        # Many queued requests per write and many buffered replies per read (a start's).
        kazoo_conn.install(self.client, options.get("sasl_options"))
        self.client.add_listener(self._on_state)
        self._reads = ReadBatcher(self.client, loop, self.hosts)  # a loop turn's reads together
        self._tree = TreeRouter(self.client)  # persistent recursive watches' events
        self._bulk = WakeBatcher(self.client, loop)  # a start's addWatch requests: one wake-up
        self.prefetch = Prefetch(self.client)  # a created child's read, from kazoo's thread

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; listeners hear 'connected' when it is up."""
        self.client.start_async()

    async def wait_connected(self, timeout: float | None = None) -> None:
        if self.connected:
            return
        ready = asyncio.Event()

        def _listener(state: str) -> None:
            if state in ("connected", "new_session"):
                ready.set()

        self.add_listener(_listener)
        try:
            if not self.connected:  # it may have connected before the listener was added
                await asyncio.wait_for(ready.wait(), timeout)
        finally:
            self.remove_listener(_listener)

    async def close(self, timeout: float = 5.0, keep_session: bool = False) -> None:
        """Stop the session (``keep_session``: only the connection, the session and its
        nodes left to expire); bounded, so a hung kazoo never holds up a daemon's exit."""
        done = asyncio.Event()

        def _stop() -> None:
            try:
                kazoo_conn.leave(self.client) if keep_session else self.client.stop()
                self.client.close()
            except Exception:  # already stopped or never connected
                pass
            finally:
                self.loop.call_soon_threadsafe(done.set)

        # A daemon thread, not the loop's executor: asyncio.run() waits for executor threads.
        threading.Thread(target=_stop, name="zk-close", daemon=True).start()
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            event(log, "zk_close_timeout", level=logging.WARNING, hosts=self.hosts)

    @property
    def connected(self) -> bool:
        # kazoo fails the requests of a dropped connection before its state says so: a
        # caller woken by that failure must not see "connected" and send again at once
        # (its requests failed with the same drop: on a loaded CI run, five in a row).
        return self.client.state == KazooState.CONNECTED and self.client._live.is_set()

    @property
    def session_id(self) -> int | None:
        return self._session_id

    def owner_acl(self) -> ACL | None:
        """The ACL entry that gives our identity (digest or SASL user) every permission."""
        if not self.auth:
            return None
        scheme, credential = self.auth
        user, _, password = credential.partition(":")
        if scheme == "sasl":  # the SASL identity is the user name
            return make_acl("sasl", user, all=True)
        return make_digest_acl(user, password, all=True)

    def default_acl(self) -> list[Any] | None:
        """With auth, new nodes are writable only by us and readable by all."""
        owner = self.owner_acl()
        return None if owner is None else [owner, *READ_ACL_UNSAFE]

    # --- state events -----------------------------------------------------------

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _on_state(self, state: str) -> None:
        # kazoo thread: translate and hop to the loop. Never block here.
        if state == KazooState.CONNECTED:
            self.loop.call_soon_threadsafe(self._connected_on_loop)
        elif state == KazooState.SUSPENDED:
            self.loop.call_soon_threadsafe(self._emit, "suspended")
        elif state == KazooState.LOST:
            if self.client.client_state == KeeperState.AUTH_FAILED:
                # kazoo gives up on this client for good: the credential is wrong.
                self.auth_error = refusal(self.auth)  # (before "lost" reaches the listeners)
                event(log, "zk_auth_failed", level=logging.ERROR, hosts=self.hosts,
                      scheme=self.auth[0] if self.auth else None,
                      hint="check zk_auth.credential (and the server's JAAS users)")  # fmt: skip
            self.loop.call_soon_threadsafe(self._emit, "lost")

    def _connected_on_loop(self) -> None:
        session = self.client.client_id[0] if self.client.client_id else None
        fresh = self._session_id is not None and session != self._session_id
        self._session_id = session
        if fresh:
            self.reconnects += 1
        self.session.granted(getattr(self.client._connection, "granted_ms", None))
        outage = self.kazoo_log.streak.end()  # (failed attempts, seconds) before this one
        extra = {"failed_attempts": outage[0], "after_s": outage[1]} if outage else {}
        event(log, "zk_connected", hosts=self.hosts, session=f"{session or 0:#x}", new=fresh,
              **extra)  # fmt: skip
        self._emit("new_session" if fresh else "connected")

    def _emit(self, state: str) -> None:
        self.announced = state in ("connected", "new_session")
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                log.exception("zookeeper state listener failed")

    # --- calls --------------------------------------------------------------------

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``client.<method>_async`` and await its result on the loop (no thread per call)."""
        return await self._awaited(lambda: getattr(self.client, f"{method}_async")(*args, **kwargs))

    async def commit(self, build: Callable[[Any], None]) -> list[Any]:
        """A ``client.transaction()`` filled by ``build``, committed: each operation's
        result or exception, in order (all applied or none)."""
        transaction = self.client.transaction()
        build(transaction)
        return await self._awaited(transaction.commit_async)

    async def get_many(
        self, paths: Sequence[str], watch: Callable[..., None] | None = None
    ) -> list[Any]:
        """The (data, stat) or the exception of every path, in order: one multi-read when
        the server has it (ZooKeeper 3.6+, ``smartstack.zk_multiread``), else one `get`
        each. ``watch``: a data watch on every path read."""
        if not paths:
            return []
        replies = await self._multi_read(paths, watch, GET_DATA)
        if replies is not None:
            return replies
        return await self.call_many("get", [(path,) for path in paths], watch=watch)

    async def list_unwatched(self, path: str) -> list[str]:
        """``path``'s children, without a children watch (a persistent recursive watch hears
        them): in a multi-read with the other listings and reads of this loop turn when the
        server has it (a start lists every service at once), else one `get_children`."""
        replies = await self._multi_read([path], None, GET_CHILDREN)
        if replies is None:
            return await self.call("get_children", path)
        if isinstance(replies[0], Exception):
            raise replies[0]  # e.g. NoNodeError, NoAuthError: as get_children raises them
        return replies[0]

    async def _multi_read(
        self, paths: Sequence[str], watch: Callable[..., None] | None, kind: int
    ) -> list[Any] | None:
        """The batched multi-read's replies; None when the server has none (before 3.6)."""
        if self.multi_read is False:
            return None
        try:
            replies = await self._reads.read(paths, watch, kind)
        except (UnimplementedError, BadArgumentsError, ValueError, struct.error) as exc:
            self.multi_read = False  # a server before 3.6: one request each from now on
            event(log, "zk_multi_read_unavailable", hosts=self.hosts,
                  error=f"{type(exc).__name__}: {exc}"[:200])  # fmt: skip
            return None
        self.multi_read = True
        return replies

    def send_tree_watch(self, path: str, callback: Callable[[WatchedEvent], Any]) -> Any | None:
        """Ask for a persistent recursive watch on ``path`` (ZooKeeper 3.6+,
        smartstack.zk_persistent): ``callback`` hears every NodeCreated/NodeDeleted/
        NodeDataChanged at or under it until ``unwatch_tree``. The server forgets it with the
        connection: ask again after every (re)connection. kazoo's async result, answered
        before any request sent after it (read it then with ``tree_watch_taken``: no wait of
        its own); None: the server refused one before (before 3.6), use one-shot watches."""
        if self.persistent_watches is False:
            self._tree.remove(path, callback)  # (routed on an earlier connection, maybe)
            return None
        self._tree.add(path, callback)  # before the request: no event slips past the route
        return start_add_watch(self.client, path, self._bulk.call)

    def tree_watch_taken(
        self, sent: Any, path: str, callback: Callable[[WatchedEvent], Any]
    ) -> bool | None:
        """True: the watch is set; False: refused (one-shot watches on this connection from
        now on); None: no answer (the connection was lost: ask again on the next one)."""
        if not sent.ready():
            return None
        exc = sent.exception
        if exc is None:
            self.persistent_watches = True
            return True
        if not isinstance(exc, UnimplementedError):
            return None
        self._tree.remove(path, callback)
        if self.persistent_watches is not False:
            self.persistent_watches = False  # a server before 3.6: one-shot watches from now on
            event(log, "zk_persistent_watch_unavailable", hosts=self.hosts,
                  error=f"{type(exc).__name__}: {exc}"[:200])  # fmt: skip
        return False

    async def watch_tree(self, path: str, callback: Callable[[WatchedEvent], Any]) -> bool:
        """``send_tree_watch`` and wait for its answer: True when set, False when refused."""
        sent = self.send_tree_watch(path, callback)
        if sent is None:
            return False
        with contextlib.suppress(UnimplementedError):
            await self._awaited(lambda: sent)
        return bool(self.tree_watch_taken(sent, path, callback))

    def unwatch_tree(self, path: str, callback: Callable[[WatchedEvent], Any]) -> None:
        """Stop ``callback`` hearing ``path``'s events; the last one out removes the watch on
        the server (without waiting: a lost connection removes it anyway)."""
        if self._tree.remove(path, callback) and self.persistent_watches and self.connected:
            with contextlib.suppress(Exception):  # closing: the server drops it with the session
                start_remove_watch(self.client, path)

    async def _awaited(self, start: Callable[[], Any]) -> Any:
        """Start a kazoo async call and await its result on the loop."""
        future: asyncio.Future[Any] = self.loop.create_future()

        @inline  # in kazoo's connection thread: it only hands the result to the loop
        def _done(result: Any) -> None:
            try:
                value = result.get_nowait()
            except Exception as exc:  # delivered to the awaiting coroutine
                self.loop.call_soon_threadsafe(_settle, None, exc)
            else:
                self.loop.call_soon_threadsafe(_settle, value, None)

        def _settle(value: Any, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(value)

        try:
            async_result = start()
        except Exception as exc:  # e.g. SessionExpiredError raised synchronously
            future.set_exception(exc)
            return await future
        async_result.rawlink(_done)
        return await future

    async def call_many(
        self, method: str, calls: Sequence[tuple[Any, ...]], **kwargs: Any
    ) -> list[Any]:
        """``client.<method>_async(*args, **kwargs)`` for every ``args`` of ``calls``, all in
        flight at once; the value or the exception of each, in order.

        The replies are collected in kazoo's thread and handed to the loop once, when the
        last one is in: a cold start reads thousands of children, and one hop, future and
        task per read cost more than the read itself.
        """
        if not calls:
            return []
        start = getattr(self.client, f"{method}_async")
        results: list[Any] = []
        for args in calls:
            try:
                results.append(start(*args, **kwargs))
            except Exception as exc:  # e.g. SessionExpiredError raised synchronously
                results.append(exc)
        return await self.wait_all(results)

    async def wait_all(self, results: Sequence[Any]) -> list[Any]:
        """The value or the exception of every kazoo async result (or exception) of
        ``results``, in order, handed to the loop once when the last one is in."""
        if not results:
            return []
        future: asyncio.Future[None] = self.loop.create_future()
        outcomes: list[Any] = [None] * len(results)
        left = [len(results)]
        lock = threading.Lock()  # replies come on kazoo's thread, early failures on ours

        def _settle() -> None:
            if not future.done():
                future.set_result(None)

        def _one(index: int) -> Callable[[Any], None]:
            @inline
            def _done(result: Any) -> None:
                try:
                    outcomes[index] = result.get_nowait()
                except Exception as exc:
                    outcomes[index] = exc
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    self.loop.call_soon_threadsafe(_settle)

            return _done

        for index, result in enumerate(results):
            if isinstance(result, BaseException):
                outcomes[index] = result
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    _settle()
            else:
                result.rawlink(_one(index))
        await future
        return outcomes

    def on_loop(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a kazoo watch callback so it runs on the asyncio loop."""

        @inline
        def _wrapped(*args: Any) -> None:
            self.loop.call_soon_threadsafe(fn, *args)

        return _wrapped

    async def ensure_path(self, path: str) -> None:
        await self.loop.run_in_executor(None, self.client.ensure_path, path, self.default_acl())


class ZooKeeperPool:
    """One connection per ensemble, shared by every service that names it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._connections: dict[tuple[str, tuple[str, str] | None], ZooKeeperConnection] = {}
        self._users: dict[tuple[str, tuple[str, str] | None], int] = {}

    def acquire(
        self,
        hosts: list[str],
        session_timeout: float = 10.0,
        auth: tuple[str, str] | None = None,
    ) -> ZooKeeperConnection:
        key = (connection_string(hosts), auth)
        if key not in self._connections:
            conn = ZooKeeperConnection(hosts, self.loop, session_timeout, auth)
            self._connections[key] = conn
            self._users[key] = 0
            conn.start()
        self._users[key] += 1
        return self._connections[key]

    async def release(self, conn: ZooKeeperConnection) -> None:
        key = (conn.hosts, conn.auth)
        if key not in self._users:
            return
        self._users[key] -= 1
        if self._users[key] <= 0:
            del self._users[key]
            del self._connections[key]
            await conn.close()

    def connections(self) -> list[ZooKeeperConnection]:
        return list(self._connections.values())

    async def close_all(self, keep: frozenset[ZooKeeperConnection] = frozenset()) -> None:
        """Close every session, but ``keep``'s: their connections only (see close)."""
        conns = list(self._connections.values())
        self._connections.clear()
        self._users.clear()
        closing = (c.close(keep_session=c in keep) for c in conns)
        await asyncio.gather(*closing, return_exceptions=True)
