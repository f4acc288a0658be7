"""Managed mode (ours): synapse runs HAProxy (master-worker) and reloads it via the master CLI.

``haproxy -W -db -S <master.sock>,mode,600 -f <config>``: the master stays in the foreground
as synapse's child (in its own session, so a terminal's Ctrl-C does not reach it) and forks
the worker. HAProxy's output is relayed to our log (``synapse.haproxy.output``: its notices
about server state changes summarized; its check transitions told to the panic's ``on_check``).

Reload: ``reload`` on the master CLI (the master re-executes itself, so its socket briefly
disappears), then the new worker must show up in ``show proc`` and answer on the admin
socket with its own pid. A config the new worker cannot load (a port already bound, say)
leaves the old worker running and raises the master's ``[failed: N]`` counter: that is a
failed reload, reported at once.

Restarts never touch traffic: on SIGTERM synapse leaves its HAProxy running
(``release``) unless ``managed.stop_on_exit`` says to stop it (or, ``auto``, HAProxy cannot
outlive synapse: ``exit_policy``), and the next synapse ``adopt()``s the running master
(found through the master socket, asked again while /proc shows it alive: ``adoption``)
instead of starting a second one; ``start()`` adopts one too. A stop is soft first: what
is in flight may end within ``managed.stop_grace`` before HAProxy's hard stop cuts the rest.

A master's death is seen at once: a pidfd (``os.pidfd_open``) becomes readable when it
exits, whether it is our child or an adopted one. ``supervisor`` restarts it: the first
crash at once, repeated ones backing off; the restart itself is the controller's. Meanwhile
synapse holds HAProxy's listening sockets (``synapse.haproxy.listeners``): connections wait
in their backlogs for the new HAProxy, which takes the same sockets, instead of being refused.

A master that lives on after its socket files were removed is replaced the same way, by a new
master that takes its listeners, then soft-stopped (``synapse.haproxy.replacement``); so is
one adopted that is not what the settings say any more (its master socket or config file
moved: ``adoption``, ``moved``; another binary: ``binary_check``), at the first reload.

``managed.launch: false``: HAProxy runs in its own container; synapse adopts and reloads
it, never starts or stops one (``elsewhere``).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from collections import deque
from pathlib import Path

from smartstack.logs import event
from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.haproxy import came_back, elsewhere, moved, not_here, ports, replacement
from synapse.haproxy.adoption import Found, beside, find_master, known_binary
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.binary_check import other_binary
from synapse.haproxy.exit_policy import stop_reason
from synapse.haproxy.listeners import ListenerKeeper
from synapse.haproxy.output import CheckSink, OutputRelay, close_relay
from synapse.haproxy.pids import end_master, pid_alive, reap, wait_pid_exit
from synapse.haproxy.reload_wait import ReloadWait, failed, serves
from synapse.haproxy.replacement import Old, Retiring, make_dirs, missing_sockets, socket_paths
from synapse.haproxy.runtime import MasterClient, RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError
from synapse.haproxy.supervisor import Supervisor
from synapse.haproxy.taken import handed_copies

__all__ = ["HAProxyProcessError", "ManagedHAProxy", "PortsTaken", "Supervisor"]  # (controller)

log = logging.getLogger("synapse.haproxy.managed")
POLL = 0.02


class HAProxyProcessError(Exception):
    """Starting or reloading the managed HAProxy failed; the message has HAProxy's output."""


class PortsTaken(HAProxyProcessError):
    """The config binds ports another process listens on, or addresses this host does not
    have (``not_here``): not started or reloaded."""

    def __init__(self, clashes: list[ports.Clash]) -> None:
        by_why: dict[str, list[str]] = {}
        for clash in clashes:
            by_why.setdefault(clash.why, []).append(str(clash))
        super().__init__("; ".join(f"{why}: " + "; ".join(c) for why, c in by_why.items()))
        self.clashes = clashes


class ManagedHAProxy:
    def __init__(self, settings: Settings, start_timeout: float, reload_timeout: float) -> None:
        if settings.master_socket is None or settings.config_path is None:
            raise ValueError("managed mode needs a config file path and a master socket")
        self.settings = settings
        known_binary(settings.binary)  # (a binary named otherwise is ours too)
        master = settings.master_socket
        sockets = settings.runtime_sockets
        self.listeners = (  # (None: managed.hold_listeners is false, or no admin socket)
            ListenerKeeper(master.with_name(master.name + ".listeners"), sockets[0])
            if settings.hold_listeners and sockets
            else None
        )
        self.master = MasterClient(str(settings.master_socket))
        self.runtime = RuntimeClient(sockets[0]) if sockets else None
        self.on_check: CheckSink | None = None  # each check transition it prints (the panic's)
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        self.master_pid: int | None = None
        self.worker_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # our child (None: adopted)
        self._relay: asyncio.Task[None] | None = None
        self._pipe: asyncio.ReadTransport | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._stopping = False  # HAProxy's alerts about its workers exiting are expected
        self.asking = came_back.Asking(str(master))  # (launch false: its asks, its stop)
        self.retiring = Retiring()  # masters replaced (their sockets were gone), until they end
        self._stale = ""  # why the adopted master is replaced at the next reload (if at all)
        self._strays: tuple[int, ...] = ()  # more masters adopted with it or beside it: retired

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.master_pid is not None and pid_alive(self.master_pid)

    async def adopt(self) -> bool:
        """Take over a master already serving our master socket (synapse restarted); asked
        again for a while when one runs but does not answer, taken by its pid when its socket
        file is gone (``adoption``)."""
        return _adopted(await self._adopt("synapse restarted"))

    async def _adopt(self, why: str) -> Found:
        """Adopted when it answered, or when its socket files are gone (the next reload
        replaces it: ``replacement``); else the live masters that did not answer (if any)."""
        config, socket = self.settings.config_path, self.settings.master_socket
        assert config is not None and socket is not None
        found = await find_master(self.master, config, socket, self.reload_timeout, why)
        if not _adopted(found) and not found.masters and not found.foreign:  # (config moved?)
            held = self.listeners.inodes() if self.listeners is not None else set()
            found = await asyncio.to_thread(moved.left_on_our_ports, config, held, why)
        if not _adopted(found):
            return found
        self._proc = None  # (a dead child of ours, if any: not the master any more)
        self.master_pid = found.proc.master_pid if found.proc else found.masters[0]
        self.worker_pid = found.proc.workers[0] if found.proc else None
        self._strays = found.masters[1:] if found.moved else ()
        if found.proc is not None and self.master_pid:  # (a stop or kill mid-replacement)
            mine = self.master_pid, moved.orphaned, self.retiring.pids()
            self._strays = await asyncio.to_thread(beside, config, socket, *mine)
        self._stale = found.moved
        event(log, "haproxy_adopted", master_pid=self.master_pid, worker_pid=self.worker_pid,
              when=why, sockets="answer" if found.proc else "missing")  # fmt: skip
        binary = self.settings.launch and await asyncio.to_thread(  # (launch: false, not ours)
            other_binary, self.master_pid, self.settings.binary
        )
        if binary:
            event(log, "haproxy_binary_changed", level=logging.WARNING,
                  master_pid=self.master_pid, running=binary, binary=self.settings.binary,
                  detail="managed.binary changed: the next reload replaces it")  # fmt: skip
            self._stale = self._stale or f"it runs {binary}, not managed.binary"
        moved.record_owner(socket, self.master_pid)
        if found.proc is not None:
            await self.hold_listeners()
        return found

    async def start(self) -> None:
        """Start HAProxy from the config file. A master already running it (its adoption
        failed, or it was started by hand) is adopted and reloaded instead: never two."""
        found = await self._adopt("before a start")
        if not _adopted(found) and not self.settings.launch and not found.foreign:
            found = await elsewhere.answered(
                self._adopt, _adopted, self.settings, self.start_timeout, self.asking.closing
            )
        if _adopted(found):
            try:
                await self.reload()  # (the caller wants the file loaded)
            except HAProxySocketError as err:
                raise HAProxyProcessError(f"cannot reload the adopted HAProxy: {err}") from err
            return
        if found.masters or found.foreign or not self.settings.launch:  # alive, not answering:
            raise HAProxyProcessError(found.error)  # a second one would share its ports
        await self._launch()

    async def _launch(self, replaces: int | None = None) -> None:
        """A new master from the config file, handed the listeners synapse holds; it
        ``replaces`` a master whose sockets are gone, or none."""
        if not self.settings.launch:
            raise HAProxyProcessError(elsewhere.no_launch(self.settings.master_socket))
        make_dirs([*socket_paths(self.settings), *self._other_paths()])
        await self._refuse_taken_ports(replaces)
        args = [
            self.settings.binary, "-W", "-db",
            "-S", f"{self.settings.master_socket},mode,600",
            "-f", str(self.settings.config_path),
        ]  # fmt: skip
        if self.settings.pid_file is not None:
            args += ["-p", str(self.settings.pid_file)]
        handover = self.listeners.handover() if self.listeners is not None else None
        if handover is not None:  # the last HAProxy died: the new one takes its sockets
            args += ["-x", str(handover.path)]
        try:
            await self._run(args, keep_listeners=replaces is not None)
        finally:
            if handover is not None:
                await handover.close()
        event(log, "haproxy_started", master_pid=self.master_pid, worker_pid=self.worker_pid,
              listeners_handed_over=handover is not None, replaces=replaces)  # fmt: skip
        self._stale, self._strays = "", ()
        assert self.settings.master_socket is not None and self.master_pid is not None
        moved.record_owner(self.settings.master_socket, self.master_pid)
        await self.hold_listeners()

    def _other_paths(self) -> list[Path]:
        """Beside the sockets, what HAProxy creates: the pid file, the handover socket."""
        listeners = [self.listeners.path] if self.listeners is not None else []
        return listeners + ([self.settings.pid_file] if self.settings.pid_file else [])

    async def _run(self, args: list[str], keep_listeners: bool) -> None:
        self._output.clear()
        try:
            # Popen, not asyncio's subprocess: its transport kills a running child when it
            # is closed, and a released HAProxy must outlive synapse.
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            if not keep_listeners:
                self.drop_listeners()
            raise HAProxyProcessError(f"cannot run {args[0]}: {err}") from err
        self.master_pid = self._proc.pid
        self._relay = asyncio.create_task(self._relay_output(self._proc))
        try:
            await self._wait_for_worker(set(), self.start_timeout, baseline=None)
        except HAProxyProcessError:
            await self.stop(keep_listeners=keep_listeners)
            raise

    async def reload(self) -> int:
        """Reload through the master CLI; the new worker's pid once it serves. A master
        whose socket files are gone, or that is not what the settings say, is replaced
        instead (``replacement``)."""
        if self._stale:
            return await self._replace(self._stale, "haproxy_replacing")
        if missing := missing_sockets(self.settings):
            return await self._replace("its sockets were gone", "haproxy_sockets_missing", missing)
        await self._refuse_taken_ports()
        before = await self.master.show_proc()
        try:
            await self.master.reload()  # 2.6 answers nothing
            worker = await self._wait_for_worker(set(before.workers), self.reload_timeout, before)
            strays, self._strays = self._strays, ()  # (it runs the config now: they may go)
            self.retiring.retire_all(map(Old, strays), "beside the adopted master")
            return worker
        finally:
            # Even when the reload is not confirmed, HAProxy may run the new config: a port
            # it dropped must be let go (a failed fetch drops every copy).
            if self.alive:
                await self.hold_listeners()

    async def _replace(self, why: str, name: str, missing: list[str] | None = None) -> int:
        """Start a new master in place of this one (``why``: its ``missing`` sockets nothing
        can reach any more, or it is not what the settings say), then soft-stop it (and the
        strays adopted with it); the new worker's pid. When the new one does not start, this
        one (it still serves) is kept: the next reload tries again."""
        assert self.master_pid is not None  # (never 0: os.kill(0, ...) signals our group)
        old = Old(self.master_pid, self._proc, self._relay, self._pipe)
        fields = {"missing": missing} if missing is not None else {"reason": why}
        event(log, name, level=logging.WARNING, master_pid=old.pid, **fields,
              listeners=await handed_copies(self.listeners, old.pid),
              detail="a new HAProxy replaces it")  # fmt: skip
        # (a stop waits, bounded by start_timeout: cut short, the old one would serve for good)
        return await replacement.finish(asyncio.create_task(self._take_over(old, why)))

    async def _take_over(self, old: Old, why: str) -> int:
        """A new master in place of ``old``, then ``old`` and the strays soft-stopped."""
        worker, strays = self.worker_pid, self._strays  # (the launch forgets them)
        self._proc = self._relay = self._pipe = self.master_pid = self.worker_pid = None
        try:
            await self._launch(replaces=old.pid)
        except HAProxyProcessError:
            self.master_pid, self.worker_pid, self._proc, self._relay, self._pipe = (
                old.pid, worker, old.proc, old.relay, old.pipe)  # fmt: skip
            raise
        self.retiring.retire_all([old, *map(Old, strays)], f"replaced: {why}")
        assert self.worker_pid is not None
        return self.worker_pid

    async def wait_exit(self) -> int | None:
        """Return as soon as the master exits (its exit status when it is our child); one
        replaced meanwhile is no exit: then the new one is waited for."""
        pid = self.master_pid
        while pid is not None:
            await wait_pid_exit(pid)
            if self.master_pid in (pid, None):
                break
            pid = self.master_pid
        return self._proc.wait() if self._proc is not None else None

    async def hold_listeners(self) -> None:
        if self.listeners is not None:
            await self.listeners.hold()

    def drop_listeners(self) -> None:
        if self.listeners is not None:
            self.listeners.drop()

    async def release_or_stop(self, config: ManagedConfig | None) -> None:
        """synapse exits: stop HAProxy with it (softly) only when ``managed.stop_on_exit``
        says so, or (``auto``) when HAProxy would not outlive synapse anyway."""
        reason = stop_reason(config, self.master_pid)
        if config is None or reason is None:
            await self.release()
        else:  # (with the masters it replaced that still run)
            retired = asyncio.create_task(self.retiring.stop(config.stop_grace, reason))
            await self.stop(config.stop_grace, reason)
            await retired

    async def release(self) -> None:
        """Leave HAProxy running without us (synapse exits): the next synapse adopts it."""
        await self.retiring.release()
        pid = self.master_pid
        if pid is None:
            return
        await self._close_relay(drain=False)
        self.drop_listeners()  # (HAProxy keeps its own; the next synapse takes copies)
        self._proc = None  # no longer ours to wait for
        self.master_pid = self.worker_pid = None
        event(log, "haproxy_left_running", master_pid=pid,
              detail="managed.stop_on_exit (false, or auto where it outlives synapse) or "
              "launch false: the next synapse adopts it")  # fmt: skip

    async def stop(
        self, grace: float = 0.0, reason: str = "its start failed", keep_listeners: bool = False
    ) -> None:
        """Stop the master (``pids.end_master``: soft, hard once ``grace`` is over).
        ``keep_listeners``: it was to replace one that still serves on them."""
        pid = self.master_pid
        if pid is None:
            return
        self._stopping = True
        began = time.monotonic()
        if not keep_listeners:  # first: a new client is refused, not queued for nobody
            self.drop_listeners()
        how = await end_master(pid, self._proc is not None, grace)
        if self._proc is not None:
            reap(self._proc)
        await self._close_relay()
        self.master_pid = self.worker_pid = None
        self._stopping = False
        cut = grace > 0 and how != "soft"  # (the grace ran out: connections were cut)
        event(log, "haproxy_stopped", level=logging.WARNING if cut else logging.INFO,
              master_pid=pid, how=how, took_s=round(time.monotonic() - began, 2),
              reason=reason)  # fmt: skip

    async def _refuse_taken_ports(self, replaces: int | None = None) -> None:
        """SO_REUSEPORT would let HAProxy share a port another process listens on."""
        assert self.settings.config_path is not None
        try:
            text = await asyncio.to_thread(self.settings.config_path.read_text)
        except OSError:
            return  # HAProxy itself reports a config file it cannot read
        if clashes := await self.taken(text, replaces):
            raise PortsTaken(clashes)

    async def taken(self, text: str, replaces: int | None = None) -> list[ports.Clash]:
        """The ``bind`` addresses of config ``text`` another process listens on (not this
        HAProxy: its processes, the listeners synapse holds for it), then those this host
        does not have (``not_here``)."""
        held = self.listeners.inodes() if self.listeners is not None else set()
        own = self._own_pids(replaces)
        clashes = await asyncio.to_thread(ports.foreign_listeners, text, own, held)
        return clashes + await asyncio.to_thread(not_here.missing, text)

    def _own_pids(self, replaces: int | None) -> set[int]:
        """The HAProxy processes synapse started or adopted: the master (and the one it
        ``replaces``, and its strays) with their workers, and the last worker of a master
        that just died (it exits on its own: a restart does not wait for it)."""
        own = ports.family(self.master_pid if self.alive else None)
        for master in (replaces, *self._strays):
            own |= ports.family(master)
        worker, path = self.worker_pid, str(self.settings.config_path)
        if worker is not None and ports.runs_config(worker, path):
            own.add(worker)
        return own

    def output_tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._output)[-lines:])

    # --- internals ------------------------------------------------------------------------

    async def _wait_for_worker(
        self, old_workers: set[int], timeout: float, baseline: ProcInfo | None
    ) -> int:
        wait = ReloadWait(timeout, baseline, self.master_pid)  # (longer while under way)
        last_error = "no answer yet"
        while wait.goes_on(self.alive):
            if self._proc is not None and self._proc.poll() is not None:
                await asyncio.sleep(0.05)  # its last words reach the relay
                raise HAProxyProcessError(
                    f"HAProxy exited with status {self._proc.returncode}:\n{self.output_tail()}"
                )
            try:
                proc = wait.proc = await wait.ask(self.master.show_proc)
                if baseline is not None and failed(proc, baseline):
                    raise HAProxyProcessError(
                        f"HAProxy could not load the new config; the old worker keeps "
                        f"serving:\n{self.output_tail()}"
                    )
                if proc.master_pid and self.master_pid not in (None, proc.master_pid):
                    # (the master this one replaces, on the same path until it binds there)
                    last_error = f"master {proc.master_pid} answers, not {self.master_pid}"
                    await asyncio.sleep(POLL)
                    continue
                new = [pid for pid in proc.workers if pid not in old_workers]
                if new and await serves(self.runtime, new[0], wait):
                    self.master_pid = proc.master_pid or self.master_pid
                    self.worker_pid = new[0]
                    return new[0]
                last_error = f"new worker {new[0]} does not answer on the admin socket yet" \
                    if new else f"workers {list(proc.workers)}, waiting for a new one"  # fmt: skip
            except HAProxySocketError as err:  # the master re-executes during a reload
                last_error, wait.proc = str(err), None
            await asyncio.sleep(POLL)
        raise HAProxyProcessError(
            f"no new HAProxy worker within {wait.waited}s ({last_error}{wait.stuck}):\n"
            f"{self.output_tail()}"
        )

    async def _close_relay(self, drain: bool = True) -> None:
        """Stop relaying HAProxy's output; ``drain``: it exited, relay its last lines first."""
        relay, self._relay = self._relay, None
        pipe, self._pipe = self._pipe, None
        await close_relay(relay, pipe, drain)

    async def _relay_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        # (a master replaced and soft-stopped: what it says about its workers is expected)
        relay = OutputRelay(self._output, lambda: self._stopping or self.master_pid != proc.pid)
        relay.on_check = self.on_check
        self._pipe, _ = await loop.connect_read_pipe(lambda: relay, proc.stdout)
        try:
            await relay.done
        finally:
            relay.flush()  # (cancelled: the notices counted so far are not lost)


def _adopted(found: Found) -> bool:
    return found.proc is not None or found.socketless
