"""What HAProxy runs, backend by backend, kept up to date without reading everything.

Reading all of `show servers state` costs little in HAProxy (~30 ms for 20,000 servers)
but turning it into objects and comparing them costs ~100 ms of Python, and planning
against all of it more again. So synapse keeps this view (``synapse.haproxy.reader``):

- read whole (``read_all``) at the start, after a failed command or a lost socket, and
  when another process answers (`show info`: its pid);
- after synapse reloaded or started HAProxy, only by name (``read_names``: `show info`,
  `show backend`): every backend is ``unread`` until read from the new process, by an
  apply that plans it (`show servers state <backend>`) or by the background sweep,
  which starts at once (a whole read there was ~30 ms of waiting for HAProxy and
  ~200 ms of parsing at 20,000 servers, on the path of the first change);
- otherwise the view is trusted: what synapse last read or did is what HAProxy runs
  (the background sweep corrects drift). The backends runtime commands changed are
  ``stale`` until read again (`show servers state <backend>`, with `show info`: still
  the same process?), after the apply, off the path to HAProxy; an apply that finds
  some still stale reads them first;
- and every ``full_every`` seconds the reader sweeps through every backend in the
  background, a few dozen at a time on a connection of its own (``read_part``: one round
  trip, parsed a few backends a loop turn), merging each part in (``merge``) under its
  lock: no apply waits more than a part's merge and plan (~3 ms), and a backend an apply
  read meanwhile keeps that newer read. (A whole read in one go is ~100 ms of Python at
  20,000 servers; in a thread it would still slow the event loop down through the GIL.)

A backend's server map is replaced only when its content changed, so an unchanged
backend keeps the very same object across reads: the controller and the renderer use
object identity to skip the work for everything that did not change, and
``take_replaced`` tells which backends did change.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection, ItemsView, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.running import RunningServer
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError

Servers = Mapping[str, RunningServer]
Pause = Callable[[], Awaitable[None]]  # before a background step (``ChangeGate.turn``)
SWEEP_PART = 25  # backends merged and planned per step of a background sweep (the apply
# after a part costs ~2.8 ms of CPU at 10 backends as at 25: mostly an apply's fixed cost)
READ_STEP = 5  # backends parsed per loop turn of a part's read: ~1 ms of parsing
# at 20 servers each (a whole part's answers parsed at once blocked the loop 6-13 ms)
SWEEP_PACE = 2.0  # after a part, the sweep pauses this many times the CPU time it took
# After a start or reload every backend read is new to the view, so a part's apply renders
# and plans all of it (~0.3 ms of CPU a backend: 25 were one 5-8 ms loop turn, which a
# change arriving then waited for): smaller parts, and fewer backends parsed a turn.
START_PART = 8
START_STEP = 2
START_WAIT = 0.5  # seconds the after-start sweep waits for changes in all (others 0.05)
NEW_PROCESS_ASKS = 50  # after a reload, asked again until the new process answers,
NEW_PROCESS_PAUSE = 0.02  # this often,
NEW_PROCESS_WAIT = 1.0  # at most this long (seconds)


class ServerIds(Mapping[str, int]):
    """server -> id of one backend's server map, read through to it: a dict of them per
    backend was ~60 bytes a server, kept as long as the map (issue 15)."""

    __slots__ = ("servers",)

    def __init__(self, servers: Servers) -> None:
        self.servers = servers

    def __getitem__(self, name: str) -> int:
        return self.servers[name].id

    def __iter__(self) -> Iterator[str]:
        return iter(self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    # The Mapping mixins go through __getitem__ per key, in Python: spec building asks
    # every changed backend's ids (``get``, ``items``) on the path of each change.
    def get(self, name: str, default: int | None = None) -> int | None:  # type: ignore[override]
        server = self.servers.get(name)
        return default if server is None else server.id

    def items(self) -> ItemsView[str, int]:
        return {n: s.id for n, s in self.servers.items()}.items()

    def __contains__(self, name: object) -> bool:
        return name in self.servers

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ServerIds) and other.servers is self.servers:
            return True
        if not isinstance(other, Mapping):
            return NotImplemented
        if len(other) != len(self.servers):
            return False
        missing = object()  # (ids are ints: no stored value is this)
        return all(other.get(n, missing) == s.id for n, s in self.servers.items())

    __hash__ = None  # type: ignore[assignment]  # (a Mapping: unhashable, as a dict)


class RunningIds(Mapping[str, Mapping[str, int]]):
    """backend -> server -> id of a view, reused while that backend's server map is the
    same object (so the renderer sees the same ids)."""

    def __init__(self) -> None:
        self._backends: Mapping[str, Servers] = {}
        self._memo: dict[str, ServerIds] = {}

    def use(self, backends: Mapping[str, Servers]) -> RunningIds:
        self._backends = backends
        if len(self._memo) > 2 * len(backends) + 16:  # backends that went away
            self._memo = {b: m for b, m in self._memo.items() if b in backends}
        return self

    def __getitem__(self, backend: str) -> Mapping[str, int]:
        servers = self._backends[backend]
        memo = self._memo.get(backend)
        if memo is None or memo.servers is not servers:
            memo = self._memo[backend] = ServerIds(servers)
        return memo

    def get(self, backend: str, default: Any = None) -> Any:  # (the mixin's: a try/except)
        return self[backend] if backend in self._backends else default

    def __iter__(self) -> Iterator[str]:
        return iter(self._backends)

    def __len__(self) -> int:
        return len(self._backends)


@dataclass(frozen=True)
class Read:
    """Backends read from HAProxy, to be merged into the view."""

    pid: str | None
    since: int  # the view's update counter when the read started
    backends: dict[str, Servers | None]  # None: HAProxy has no such backend
    whole: bool = False  # every backend HAProxy has (the others are gone)


class RunningView:
    """The runtime state of one HAProxy (the first admin socket), read whole or in part.

    All methods but ``read_part`` (and ``sweep``, which merges under the lock) run under
    the controller's lock.
    """

    def __init__(
        self, client: RuntimeClient, full_every: float, clock: Callable[[], float]
    ) -> None:
        self.client = client
        self.full_every = full_every
        self._clock = self.clock = clock  # (the reader paces its forced reads by it)
        self.backends: dict[str, Servers] = {}
        self.valid = False  # False: the next read must be a whole one
        self.pid: str | None = None  # the process the view was read from (`show info`)
        self._read_at = -math.inf
        self.full_reads = 0  # whole reads in one go (``read_all``): for tests
        self.partial_reads = 0
        self.sweeps = 0  # every backend read again (whole, or part by part)
        self._replaced: set[str] = set()  # backends whose map changed since take_replaced()
        self._counter = 0  # counts updates of the view
        self._updated: dict[str, int] = {}  # backend -> counter when an apply last read it
        self._stale: dict[str, int] = {}  # backend -> counter when commands changed it
        self._unread: set[str] = set()  # known by name since a reload, servers not read yet
        self._invalidated = 0
        self._refreshed = 0  # counter when last invalidated or read anew (whole, by name)

    def invalidate(self) -> None:
        """Something may have changed behind our back (reload, failed command, error)."""
        self.valid = False
        self._counter += 1
        self._invalidated = self._refreshed = self._counter  # reads begun before: refused
        self._updated.clear()  # (no read it could refuse is taken now: see read_names)
        self._stale.clear()  # the next read is a whole one
        self._unread.clear()

    @property
    def due(self) -> float:
        """Seconds until the next background sweep (0: due now)."""
        return max(0.0, self._read_at + self.full_every - self._clock())

    @property
    def sweep_wait(self) -> float | None:
        """Seconds the next sweep's steps may wait for changes in all (``ChangeGate.job``;
        None: a background job's MAX_WAIT)."""
        return START_WAIT if self._unread else None

    @property
    def counter(self) -> int:
        return self._counter

    def refreshed_since(self, since: int) -> bool:
        """Whether the view was invalidated or read anew (whole, or by name after a reload)
        after ``counter`` was ``since``: a read begun before has nothing newer for it."""
        return self._refreshed > since

    @property
    def stale(self) -> set[str]:
        """Backends runtime commands changed that were not read since."""
        return set(self._stale)

    @property
    def unread(self) -> set[str]:
        """Backends HAProxy has (since the last reload or start) whose servers were not
        read from it yet: the view holds what they were before the reload (or nothing)."""
        return self._unread

    def mark_stale(self, backends: Collection[str]) -> None:
        """Runtime commands changed ``backends``: read them before trusting them again. A
        read begun before (a sweep's part) must not bring back what they were."""
        self._counter += 1
        for name in backends:
            self._stale[name] = self._updated[name] = self._counter

    def follow(self, name: str, servers: Servers) -> None:
        """``servers`` are what ``name`` runs now (``view_ops``: after commands that
        succeeded), as if just read: a read begun before does not bring older ones back."""
        self._counter += 1
        self._updated[name] = self._counter
        kept = _kept(self.backends, name, servers)
        if kept is not self.backends.get(name):
            self._replaced.add(name)
        self.backends[name] = kept

    async def read_names(self, serving: str | None = None) -> None:
        """After synapse reloaded or started HAProxy: the new process's pid and backends
        (`show info`, `show backend`), every backend ``unread``; HAProxySocketError
        propagates. Reads begun before are refused (another process answered them).

        ``serving``: the pid the reload was confirmed with. An old worker may still take
        a connection made now (the listener is shared for a moment, `expose-fd
        listeners`; a stopping one's answers are asked again by the client): asked again
        on a fresh connection until ``serving`` answers, at most NEW_PROCESS_WAIT (another
        reload since the confirmation: then what answered stands, as on an error after a
        first answer)."""
        pid, names = await self.client.backend_names()
        deadline = time.monotonic() + NEW_PROCESS_WAIT
        for _ in range(NEW_PROCESS_ASKS if serving is not None else 0):
            if pid == serving or time.monotonic() > deadline:
                break
            try:
                await self.client.release()
                await asyncio.sleep(NEW_PROCESS_PAUSE)
                pid, names = await self.client.backend_names()
            except HAProxySocketError:
                break
        self._counter += 1
        self._invalidated = self._refreshed = self._counter
        # Every update was at or before this counter: only reads begun before it could
        # be refused by them, and those are refused anyway. Kept, the backends of every
        # service that ever left stayed in it (soak s45).
        self._updated.clear()
        self._stale.clear()
        found = set(names)
        for name in [n for n in self.backends if n not in found]:
            del self.backends[name]
            self._replaced.add(name)
        for name in names:
            if name not in self.backends:
                self.backends[name] = {}
                self._replaced.add(name)
        self._unread = found
        self.pid, self.valid = pid, True
        self._read_at = -math.inf  # the background sweep reads them now

    async def read_all(self) -> None:
        """`show backend` + `show servers state`; HAProxySocketError propagates."""
        self.valid = False
        since = self._counter
        pid, found = await self.client.read_state(None)
        self.full_reads += 1
        old = self.backends
        # Comparing 20,000 servers with the old view takes a while: in a thread (the
        # caller holds the lock: nothing else changes the view meanwhile).
        backends: dict[str, Servers | None] = await asyncio.to_thread(
            lambda: {name: _kept(old, name, servers or {}) for name, servers in found.items()}
        )
        self.merge(Read(pid, since, backends, whole=True))

    async def read(self, backends: Collection[str], check_pid: bool = True) -> None:
        """Read only ``backends`` (a whole read instead when the view is not trusted, or
        when another HAProxy process answers than the one read last; ``check_pid``
        False: the caller knows it is the same, e.g. on the connection it just read)."""
        if not self.valid:
            await self.read_all()
            return
        if not backends and not check_pid:
            return
        since = self._counter
        pid, found = await self.client.read_state(
            sorted(backends), with_pid=check_pid, known=self.backends
        )
        if check_pid and pid != self.pid:  # restarted or reloaded behind our back
            await self.read_all()
            return
        self.merge(Read(self.pid, since, found))
        self.partial_reads += 1

    async def sweep(
        self,
        lock: asyncio.Lock,
        after_part: Callable[[], Awaitable[object]] | None = None,
        pause: Pause | None = None,
    ) -> bool:
        """Read every backend again in the background, SWEEP_PART at a time (START_PART
        after a start or reload) on a connection of its own, merging each part under
        ``lock`` (the controller's), then ``after_part`` under it too (the reader plans
        what the part changed); False when a part was refused or a reload came meanwhile
        (an invalidation, another process).
        ``pause`` before each step (``ChangeGate.job``: a change on its way goes first;
        after a start, START_WAIT in all: ``sweep_wait``)."""
        after_start = bool(self._unread)
        size, step = (START_PART, START_STEP) if after_start else (SWEEP_PART, READ_STEP)
        client = RuntimeClient(self.client.path, self.client.timeout)
        since = self._counter
        async with client.held():
            _, names = await client.backend_names()
            everything = sorted(set(names) | set(self.backends))
            for start in range(0, len(everything), size):
                if pause is not None:
                    await pause()
                began = time.thread_time()
                backends = everything[start : start + size]
                part = await self.read_part(client, backends, pause, step)
                if pause is not None:
                    await pause()
                async with lock:
                    # Reloaded meanwhile: this connection reaches the old worker (its pid
                    # would invalidate the new process's view) and the backends swept so
                    # far are unread again. Start over, on a new connection.
                    if self._invalidated > since or not self.merge(part):
                        return False
                    if after_part is not None:
                        await after_part()
                # The loop mostly idle meanwhile: a change's steps do not queue behind parts.
                await asyncio.sleep(SWEEP_PACE * (time.thread_time() - began))
        return True

    async def read_part(
        self,
        client: RuntimeClient,
        backends: Collection[str],
        pause: Pause | None = None,
        step: int = READ_STEP,
    ) -> Read:
        """Some backends, for a background sweep or a settle read: needs no lock; ``merge``
        it under it. Asked in one round trip on ``client`` (an apply may wait for a settle
        read), the answers parsed READ_STEP backends per turn of the loop, so the loop
        serves a change between them."""
        since = self._counter
        pid, found = await client.read_state(
            sorted(backends), step=step, known=self.backends, pause=pause
        )
        return Read(pid, since, found)

    def merge(self, read: Read) -> bool:
        """Take a read in. A backend an apply read after ``read`` started keeps that newer
        read. False (nothing taken) when the read is from before an invalidation, or from
        another process than the view's (the view is then invalidated)."""
        if read.since < self._invalidated:
            return False  # read before whatever made the view untrustworthy
        if self.valid and read.pid is not None and read.pid != self.pid:
            self.invalidate()
            return False
        self._counter += 1
        for name, servers in read.backends.items():
            if self._updated.get(name, -1) > read.since:
                continue
            self._updated[name] = self._counter
            self._stale.pop(name, None)
            if name in self._unread:  # first read since the reload: plan it (replaced)
                self._unread.discard(name)
                self._replaced.add(name)
            if servers is None:  # HAProxy has no such backend
                if self.backends.pop(name, None) is not None:
                    self._replaced.add(name)
                continue
            kept = _kept(self.backends, name, servers)
            if kept is not self.backends.get(name):
                self._replaced.add(name)
            self.backends[name] = kept
        if read.whole:
            for name in [n for n in self.backends if n not in read.backends]:
                if self._updated.get(name, -1) <= read.since:
                    del self.backends[name]
                    self._replaced.add(name)
            self._unread.clear()
            self.pid = read.pid
            self.valid = True
            self._refreshed = self._counter
            self.swept()
        return True

    def swept(self) -> None:
        """Every backend was read again (whole, or part by part since the last sweep)."""
        self._read_at = self._clock()
        self.sweeps += 1

    def take_replaced(self) -> set[str]:
        """The backends whose servers changed (or appeared, or went) since the last call."""
        replaced, self._replaced = self._replaced, set()
        return replaced

    def snapshot(self) -> dict[str, Servers]:
        """The view as a plan's input (a copy of the outer map: later reads do not leak in)."""
        return dict(self.backends)


def _kept(old: Mapping[str, Servers], name: str, servers: Servers) -> Servers:
    """The old map when nothing in it changed: identity means "unchanged" downstream."""
    before = old.get(name)
    return before if before is not None and before == servers else servers


def file_ids(config: ParsedConfig | None) -> dict[str, dict[str, int]]:
    """backend -> server -> the id its config file line gives (``id N``)."""
    hints: dict[str, dict[str, int]] = {}
    if config is not None:
        for proxy, lines in config.servers.items():
            for name, line in lines.items():
                tokens = line.options.split()
                if "id" in tokens[:-1] and tokens[tokens.index("id") + 1].isdigit():
                    hints.setdefault(proxy, {})[name] = int(tokens[tokens.index("id") + 1])
    return hints
