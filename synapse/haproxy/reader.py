"""Reading what HAProxy runs: the first step of every apply (what to plan: ``scoping``).

The running state is the config file as synapse wrote it (synapse keeps it equal to
what HAProxy runs) plus HAProxy's runtime state, kept in a ``RunningView``
(``synapse.haproxy.view``): read whole when it is not trusted, else only the backends
a change touches.

In the background it sweeps: every FULL_READ_INTERVAL, and at once after synapse reloaded
or started HAProxy (the apply then read only the backends' names), it reads the whole
runtime state, a part at a time, and has the controller apply where a part differs from
what the last plan saw (after a reload: every backend, planned a part at a time). After an apply's
runtime commands the view follows them (``ran``, ``view_ops``) or reads what they changed
(``settle_later``), off the path to HAProxy. Looks from outside the applies (/health/<service>)
share reads (``looks``); one finding the socket dead has the sweep read whole at once.
Another process answering (an outside reload or restart) is noticed within a second
(``outside``): the view is read whole and planned then, not at the next sweep.

A read that connected but got no answer in time (a stalled worker) is no lost socket:
``slow_socket`` (no reload for a while, the change goes in once HAProxy answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.change_gate import ChangeGate
from synapse.haproxy.configfile import ConfigFile
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.looks import Looks
from synapse.haproxy.ops import Op
from synapse.haproxy.outside import OutsideWatch, SharedClient, SweepHooks
from synapse.haproxy.running import RunningState
from synapse.haproxy.runtime import KEEP_IDLE_S, RuntimeClient
from synapse.haproxy.scoping import PlanScope
from synapse.haproxy.slow_socket import SlowSocket
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.view import Read, RunningView
from synapse.haproxy.view_ops import Recheck, TouchedAt, follow

log = logging.getLogger("synapse.haproxy")

FULL_READ_INTERVAL = 30.0  # seconds between background sweeps of the whole runtime state
SETTLE_ROUNDS = 3  # settle reads in a row while commands keep changing what was read
SETTLE_PAUSE = 0.1  # seconds before the next SETTLE_ROUNDS, when commands kept coming


class RunningReader(PlanScope, SlowSocket):
    def __init__(
        self,
        runtime: list[RuntimeClient],
        file: ConfigFile | None,
        clock: Callable[[], float],
        managed: bool = False,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.file = file
        self.view = RunningView(runtime[0], FULL_READ_INTERVAL, clock) if runtime else None
        self.version: tuple[int, int, int] | None = None  # None: read it again
        self.runtime_error: str | None = None  # why the last read failed
        self.slow_since: float | None = None  # (clock) reads slow in a row since (``is_slow``)
        self._recovered = False  # answered again after being slow (``take_recovered``)
        self._clock = clock
        self._sweeper: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()  # a reload: sweep now, not at the next period
        self._suspect = False  # a look found the socket dead: read whole now (``look_failed``)
        self.looks = Looks(runtime, self.view, self.look_failed)  # (/health/<service>)
        self._settler: asyncio.Task[None] | None = None
        # The settle read in flight: the backends it reads, and the read.
        self._settling: tuple[set[str], asyncio.Task[Read]] | None = None
        self.recheck = Recheck(self._read_followed)  # (the view followed commands there)
        first = runtime[0] if runtime else None  # the settle reads' client (kept connection)
        self._apart = first and RuntimeClient(first.path, first.timeout, keep_idle=KEEP_IDLE_S)
        # Another process answering (an outside reload) is noticed within a second (outside.py).
        self.outside: OutsideWatch | None = None
        if first is not None and self.view is not None:
            # (shared with the state dumper; kept only on synapse's own socket: ``SharedClient``)
            idle = KEEP_IDLE_S if managed else 0.0
            self.outside = OutsideWatch(SharedClient(first.path, first.timeout, idle), self.view)
        self.changes_waiting = 0  # applies of a change waiting for the lock (``change_waits``)
        self.change_gate = ChangeGate()  # the sweep's steps wait while a change comes (change_gate)
        self._touched_at = TouchedAt(clock)  # (a revive: ``touched_within``)
        self.hooks = SweepHooks()  # the controller's (``start_sweeping``)
        # Told the backends runtime commands changed (the server-state dumper reads them).
        self.on_touched: Callable[[Collection[str]], None] | None = None
        # The touched backends the server-state file may not hold yet (the dumper's).
        self.unsaved: Callable[[], set[str]] = set

    def warn_without_runtime(self) -> None:
        if not self.runtime:
            event(log, "haproxy_no_runtime_api", level=logging.WARNING,
                  detail="no runtime socket (do_socket false, or no socket_file_path / stats "
                  "socket): every change of servers needs a reload")  # fmt: skip

    # --- reading ------------------------------------------------------------------------

    async def read(
        self,
        changed: Collection[str] | None = None,
        wanted: Collection[str] | None = None,
        *,
        reloaded: bool = False,
        serving: str | None = None,
    ) -> RunningState:
        """The config file as synapse wrote it, and HAProxy's runtime state.

        The runtime view is read whole when it is not trusted, else only the ``changed``
        backends (None: whole; empty: nothing, no round trip to HAProxy) and, of the
        backends not read since a reload, those in ``wanted`` (the ones the apply may
        plan; None: any, so all of them). ``reloaded``: synapse just reloaded or started
        HAProxy: only its pid and backend names; the sweep reads their servers at once;
        ``serving``: the new process's pid, when known (``RunningView.read_names``).
        """
        config: ParsedConfig | None = None
        missing = False
        if self.file is not None:
            missing = not self.file.exists
            config = self.file.parsed
        if self.view is None:
            return RunningState(None, config, missing)
        began = time.monotonic()
        try:
            if self.version is None:
                self.version = await self.runtime[0].version()
            if reloaded:
                await self.view.read_names(serving)
                self._kick.set()
            elif changed is None or (self.view.unread and wanted is None):
                await self.view.read_all()
            else:
                changed = await self._settled_meanwhile(changed)
                backends = changed | (self.view.unread & set(wanted or ()))
                if backends or not self.view.valid:
                    await self.view.read(backends)
        except HAProxySocketError as err:
            self.view.invalidate()
            slow = self.read_failed(err, time.monotonic() - began)
            return RunningState(None, config, missing, runtime_error=str(err), runtime_slow=slow)
        finally:
            self.note_view_changes()
        self.answered()
        return RunningState(self.view.snapshot(), config, missing)

    @property
    def trusted(self) -> bool:
        """Whether the next apply plans on the kept view (not a whole read)."""
        return self.view is not None and self.view.valid

    @property
    def unread(self) -> set[str]:
        """Backends not read since synapse reloaded or started HAProxy (never planned on)."""
        return self.view.unread if self.view is not None else set()

    def stale(self) -> set[str]:
        """What an apply must read before planning: the backends runtime commands changed
        and nothing read since (the view is trusted for the rest)."""
        return self.view.stale if self.view is not None else set()

    @contextlib.contextmanager
    def change_waits(self) -> Iterator[None]:
        """A change's apply waits for its turn meanwhile (``reload_window.turn``), counted:
        the sweep leaves a part's plan to it (other tasks waiting for the lock do not count)."""
        self.changes_waiting += 1
        try:
            yield
        finally:
            self.changes_waiting -= 1

    def ran(self, ops: Sequence[Op], done: Collection[Op]) -> None:
        """After runtime commands (``done``: those that succeeded): the view follows them
        where it can (``view_ops.follow``), the other backends are read back
        (``settle_later``); the followed ones are read again a second later (``Recheck``):
        what HAProxy changed by itself meanwhile (a health check), another process."""
        if self.view is None or not ops:
            return
        touched, followed = follow(self.view, ops, done)
        self.settle_later(touched - followed)
        if followed:
            self._touched(followed)
            self.recheck.add(followed)

    def _read_followed(self, followed: set[str]) -> None:
        if self.view is not None and self.view.valid:
            self.view.mark_stale(followed & self.view.backends.keys())
            self._start_settler()

    def settle_later(self, touched: Collection[str]) -> None:
        """After runtime commands: read what they changed once the apply is over, on a
        connection of its own and without the controller's lock (the next change's apply
        need not wait for HAProxy's answer behind it; merged under the lock; the next
        apply takes that read, or reads them first if it comes sooner)."""
        if self.view is None or not touched:
            return
        self.view.mark_stale(touched)
        self._touched(touched)
        self._start_settler()

    def _touched(self, touched: Collection[str]) -> None:
        """Runtime commands changed ``touched``: the state dumper and a revive are told."""
        assert self.view is not None
        if self.on_touched is not None:
            self.on_touched(touched)
        self._touched_at.note(touched, self.view.backends)

    def _start_settler(self) -> None:
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle())

    async def _settle(self) -> None:
        """Read the stale backends as ``settle_later`` says (an apply needing them takes
        the read: ``_settled_meanwhile``), with `show info`: when another HAProxy process
        answers (an outside reload or restart, the commands may have reached the old one),
        the view is read whole and ``apply`` plans against it. Backends commands changed
        again since are read again: SETTLE_ROUNDS reads in a row, then again after
        SETTLE_PAUSE while any are left (``settle_later`` starts no settler meanwhile)."""
        view, lock = self.view, self.hooks.lock
        if view is None or lock is None:
            return
        try:
            while await self._settle_rounds(view, lock):
                await asyncio.sleep(SETTLE_PAUSE)
        finally:
            self._settling = None  # (an unexpected error: no later apply waits for it)

    async def _settle_rounds(self, view: RunningView, lock: asyncio.Lock) -> bool:
        """Up to SETTLE_ROUNDS settle reads; True when backends are still stale (commands
        changed them during the last read)."""
        for _ in range(SETTLE_ROUNDS):
            if not view.stale or not view.valid:
                return False
            since, covered = view.counter, set(view.stale)
            reading = asyncio.create_task(self._read_apart(covered))
            self._settling = (covered, reading)
            try:
                part = await asyncio.shield(reading)
            except HAProxySocketError as err:
                # The covered backends stay stale: the next apply reads them (on its own
                # connection: a lost HAProxy shows there). The view is not invalidated: a
                # reload, a start or that apply may have read it since.
                self._settling = None
                if not view.refreshed_since(since):
                    event(log, "haproxy_state_read_failed", level=logging.WARNING, error=str(err))
                return False
            async with lock:
                self._settling = None
                if view.refreshed_since(since):
                    continue  # read anew since (a reload, a start, a whole read): no newer
                if view.merge(part):
                    view.partial_reads += 1  # (counted like ``RunningView.read``)
                self.note_view_changes()
                if not view.valid and self.hooks.ready() and self.hooks.apply:  # another process
                    await self.hooks.apply()  # answered: the merge invalidated the view
                    return False
        return bool(view.stale) and view.valid

    async def _read_apart(self, backends: Collection[str]) -> Read:
        """``backends`` on a connection of its own, kept from the last such read; a dead
        one, or an old worker's (`show info`: stopping), is replaced (``_ask_reads``)."""
        assert self.view is not None and self._apart is not None
        async with self._apart.held():
            return await self.view.read_part(self._apart, backends)

    async def _settled_meanwhile(self, changed: Collection[str]) -> set[str]:
        """Of the ``changed`` backends an apply must read, those a settle read in flight
        does not bring: that read is waited for and merged here (HAProxySocketError, or
        the read cancelled by ``stop_sweeping``: the apply reads them itself)."""
        settling, view = self._settling, self.view
        if settling is None or view is None or not changed:
            return set(changed)
        covered, reading = settling
        if covered.isdisjoint(changed):
            return set(changed)
        try:
            part = await asyncio.shield(reading)
            if not view.refreshed_since(part.since):
                view.merge(part)
        except HAProxySocketError:
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not reading.cancelled() or (task is not None and task.cancelling()):
                raise  # (this apply is cancelled, not only the read it waited for)
        stale = view.stale  # (commands since the read began: still stale, read again)
        return {name for name in changed if name not in covered or name in stale}

    def socket_problem(self) -> tuple[str | None, float | None]:
        """/health's admin socket: (why it fails, seconds it connected without answering);
        a look's read unanswered for ``looks.LATE_LIMIT`` counts before its tries time out."""
        if self.runtime_error is not None:
            return self.runtime_error, self.slow_for()
        return self.looks.late(), None

    def look_failed(self, error: str) -> None:
        """A look (``looks``: /health/<service>) found the admin socket dead: /health says
        so now, and the sweep reads whole at once (a lost socket: the apply reloads, which
        recreates it), not at its next period."""
        self.runtime_error, self._suspect = error, True
        self._kick.set()

    def touched_within(self, seconds: float) -> set[str]:
        """The backends runtime commands changed in the last ``seconds``."""
        return self._touched_at.within(seconds)

    def invalidate(self) -> None:
        """HAProxy may differ from the view (a reload, a start, a failed command)."""
        if self.view is not None:
            self.view.invalidate()

    def note_view_changes(self) -> set[str]:
        """Take the backends whose servers changed into what to render and plan."""
        assert self.view is not None
        replaced = self.view.take_replaced()
        self.scope_changed(replaced)
        return replaced

    def start_sweeping(
        self,
        lock: asyncio.Lock,
        ready: Callable[[], bool],
        apply: Callable[[], Awaitable[object]],
        owner_alive: Callable[[], bool] = lambda: True,
    ) -> None:
        """Sweep in the background (see ``_sweep``), when there is a runtime view;
        ``owner_alive``: see ``SweepHooks``."""
        self.hooks = SweepHooks(lock, ready, apply, owner_alive)
        if self.view is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep(lock, ready, apply))
        if self.outside:
            self.outside.start(self.hooks)

    async def stop_sweeping(self) -> None:
        task, self._sweeper = self._sweeper, None
        await cancel_and_wait(task)
        if self.outside:
            await self.outside.stop()
        await self.looks.stop()
        await self.recheck.stop()
        settler, self._settler = self._settler, None
        settling = self._settling  # (shielded from the settler's cancellation)
        await cancel_and_wait(settler)
        if settling is not None:
            await cancel_and_wait(settling[1])
        self._settling = None
        await self.release()

    async def release(self) -> None:
        """Close the settle reads' kept connection (at a stop, and after synapse reloaded:
        HAProxy keeps an old worker alive while a CLI connection to it is open)."""
        if self._apart is not None:
            await self._apart.release()
        if self.outside:
            await self.outside.release()

    async def _sweep(
        self,
        lock: asyncio.Lock,
        ready: Callable[[], bool],
        apply: Callable[[], Awaitable[object]],
    ) -> None:
        """Every FULL_READ_INTERVAL: read HAProxy's whole runtime state, a part at a time
        and without holding up applies (``RunningView.sweep``, merging under ``lock``: the
        controller's), then, when a backend differs from what the last plan saw (an
        operator's command, health changes), ``apply`` under the lock: drift is corrected
        even when nothing else changes. ``ready``: the controller has a desired state."""
        view = self.view
        assert view is not None
        forced_at = -math.inf

        owed = False  # a part's changes not planned yet (a change went first)

        async def after_part() -> None:
            # What a part changed is planned at once (after a start: every backend, a
            # part at a time), so no apply waits for more than a part's plan; unless a
            # change waits for the lock: it goes first and plans the part with its own.
            nonlocal owed
            owed = bool(self.note_view_changes()) or owed
            if owed and ready() and not self.changes_waiting:
                owed = False
                await apply()

        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._kick.wait(), 1.0 if self._suspect else max(view.due, 1.0)
                )
            self._kick.clear()
            if not ready():
                continue
            if not view.valid or self._suspect:
                # Nothing trusted (another process answered, a socket error) and maybe no
                # change coming to read it: an apply reads it whole and corrects, at once,
                # then at most once per sweep period while HAProxy cannot be read (once a
                # second when a look found the socket dead: a reload recreates a lost one).
                if view.clock() - forced_at >= (1.0 if self._suspect else view.full_every):
                    forced_at = view.clock()
                    async with lock:
                        if self._suspect:  # (kept connections outlive a socket file)
                            self._suspect = False
                            view.invalidate()
                            for client in filter(None, [*self.runtime, self._apart]):
                                await client.release()
                        if ready() and not view.valid:
                            await apply()
                continue
            if view.due:
                continue  # an apply read it all meanwhile
            forced_at = -math.inf
            began = time.monotonic()
            try:
                if not await view.sweep(lock, after_part, self.change_gate.job(view.sweep_wait)):
                    continue
            except HAProxySocketError as err:
                view.invalidate()  # the next apply (or the next turn here) reads it whole
                self.read_failed(err, time.monotonic() - began)  # /health says so meanwhile
                continue
            except Exception:  # a bug must not end the sweep: after a reload only it reads
                log.exception("HAProxy background sweep failed")  # the untouched backends
                view.invalidate()  # (what the sweep took in is unknown: read all again)
                continue
            async with lock:
                if view.unread:  # reloaded since the last part: not swept, sweep again
                    self._kick.set()
                    continue
                view.swept()
                self.note_view_changes()
                if self.plans_owed:
                    await apply()
