"""Managed mode (ours): synapse runs HAProxy (master-worker) and reloads it via the master CLI.

``haproxy -W -db -S <master.sock>,mode,600 -f <config>``: the master stays in
the foreground as synapse's child (in its own session, so a terminal's Ctrl-C
does not reach it) and forks the worker. HAProxy's output is relayed to our log
(``synapse.haproxy.output``: its notices about server state changes summarized).

Reload: ``reload`` on the master CLI (the master re-executes itself, so its
socket briefly disappears), then the new worker must show up in ``show proc``
and answer on the admin socket with its own pid. A config the new worker cannot
load (a port already bound, say) leaves the old worker running and raises the
master's ``[failed: N]`` counter: that is a failed reload, reported at once.

Restarts never touch traffic: on SIGTERM synapse leaves its HAProxy running
(``release``) unless ``managed.stop_on_exit`` says to stop it (or, ``auto``, HAProxy cannot
outlive synapse: ``exit_policy``), and the next synapse ``adopt()``s the running master
(found through the master socket, asked again while /proc shows it alive: ``adoption``)
instead of starting a second one; ``start()`` adopts one too. A stop is soft first: what
is in flight may end within ``managed.stop_grace`` before HAProxy's hard stop cuts the rest.

A master's death is seen at once: a pidfd (``os.pidfd_open``) becomes readable when it
exits, whether it is our child or an adopted one. ``Supervisor`` restarts it: the first
crash at once, repeated ones backing off; the restart itself is the controller's. Meanwhile
synapse holds HAProxy's listening sockets (``synapse.haproxy.listeners``): connections wait
in their backlogs for the new HAProxy, which takes the same sockets, instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from smartstack.logs import event
from smartstack.tasks import cancel_and_wait
from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.haproxy import ports
from synapse.haproxy.adoption import Found, find_master
from synapse.haproxy.answers import ProcInfo
from synapse.haproxy.exit_policy import stop_reason
from synapse.haproxy.listeners import ListenerKeeper
from synapse.haproxy.output import OutputRelay
from synapse.haproxy.runtime import MasterClient, RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError

log = logging.getLogger("synapse.haproxy.managed")
_controller_log = logging.getLogger("synapse.haproxy")  # (where its events always were)
POLL = 0.02
STABLE_RUN = 30.0  # seconds a restarted HAProxy must live before its crashes are forgiven
MAX_RESTART_DELAY = 60.0
TERM_WAIT = 5.0  # seconds after SIGTERM (a hard stop takes milliseconds) before SIGKILL


class HAProxyProcessError(Exception):
    """Starting or reloading the managed HAProxy failed; the message has HAProxy's output."""


class ManagedHAProxy:
    def __init__(self, settings: Settings, start_timeout: float, reload_timeout: float) -> None:
        if settings.master_socket is None or settings.config_path is None:
            raise ValueError("managed mode needs a config file path and a master socket")
        self.settings = settings
        master = settings.master_socket
        self.listeners = (  # (None: managed.hold_listeners is false, or no admin socket)
            ListenerKeeper(
                master.with_name(master.name + ".listeners"), settings.runtime_sockets[0]
            )
            if settings.hold_listeners and settings.runtime_sockets
            else None
        )
        self.master = MasterClient(str(settings.master_socket))
        self.runtime = (
            RuntimeClient(settings.runtime_sockets[0]) if settings.runtime_sockets else None
        )
        self.start_timeout = start_timeout
        self.reload_timeout = reload_timeout
        self.master_pid: int | None = None
        self.worker_pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # our child (None: adopted)
        self._relay: asyncio.Task[None] | None = None
        self._pipe: asyncio.ReadTransport | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._stopping = False  # HAProxy's alerts about its workers exiting are expected

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.master_pid is not None and _pid_alive(self.master_pid)

    async def adopt(self) -> bool:
        """Take over a master already serving our master socket (synapse restarted); asked
        again for a while when one runs but does not answer (``adoption``)."""
        return (await self._adopt("synapse restarted")).proc is not None

    async def _adopt(self, why: str) -> Found:
        """Adopted when ``proc`` is set; else the live masters that did not answer (if any)."""
        config, socket = self.settings.config_path, self.settings.master_socket
        assert config is not None and socket is not None
        found = await find_master(self.master, config, socket, self.reload_timeout, why)
        if found.proc is not None:
            self._proc = None  # (a dead child of ours, if any: not the master any more)
            self.master_pid, self.worker_pid = found.proc.master_pid, found.proc.workers[0]
            event(log, "haproxy_adopted", master_pid=self.master_pid,
                  worker_pid=self.worker_pid, when=why)  # fmt: skip
            await self.hold_listeners()
        return found

    async def start(self) -> None:
        """Start HAProxy from the config file. A master already running it (its adoption
        failed, or it was started by hand) is adopted and reloaded instead: never two."""
        found = await self._adopt("before a start")
        if found.proc is not None:
            try:
                await self.reload()  # (the caller wants the file loaded)
            except HAProxySocketError as err:
                raise HAProxyProcessError(f"cannot reload the adopted HAProxy: {err}") from err
            return
        if found.masters:  # alive, not answering: a second one would share its ports
            raise HAProxyProcessError(found.error)
        await self._refuse_taken_ports()
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
            await self._run(args)
        finally:
            if handover is not None:
                await handover.close()
        event(log, "haproxy_started", master_pid=self.master_pid, worker_pid=self.worker_pid,
              listeners_handed_over=handover is not None)  # fmt: skip
        await self.hold_listeners()

    async def _run(self, args: list[str]) -> None:
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
            self.drop_listeners()
            raise HAProxyProcessError(f"cannot run {args[0]}: {err}") from err
        self.master_pid = self._proc.pid
        self._relay = asyncio.create_task(self._relay_output(self._proc))
        try:
            await self._wait_for_worker(set(), self.start_timeout, baseline=None)
        except HAProxyProcessError:
            await self.stop()
            raise

    async def reload(self) -> int:
        """Reload through the master CLI; the new worker's pid once it serves."""
        await self._refuse_taken_ports()
        before = await self.master.show_proc()
        try:
            await self.master.reload()  # 2.6 answers nothing
            return await self._wait_for_worker(set(before.workers), self.reload_timeout, before)
        finally:
            # Even when the reload is not confirmed, HAProxy may run the new config: a port
            # it dropped must be let go (a failed fetch drops every copy).
            if self.alive:
                await self.hold_listeners()

    async def wait_exit(self) -> int | None:
        """Return as soon as the master exits (its exit status when it is our child)."""
        pid = self.master_pid
        if pid is not None:
            await wait_pid_exit(pid)
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
        reason = stop_reason(config)
        if config is None or reason is None:
            await self.release()
        else:
            await self.stop(config.stop_grace, reason)

    async def release(self) -> None:
        """Leave HAProxy running without us (synapse exits): the next synapse adopts it."""
        pid = self.master_pid
        if pid is None:
            return
        await self._close_relay(drain=False)
        self.drop_listeners()  # (HAProxy keeps its own; the next synapse takes copies)
        self._proc = None  # no longer ours to wait for
        self.master_pid = self.worker_pid = None
        event(log, "haproxy_left_running", master_pid=pid,
              detail="managed.stop_on_exit (false, or auto outside a container): the next "
              "synapse adopts it")  # fmt: skip

    async def stop(self, grace: float = 0.0, reason: str = "its start failed") -> None:
        """Soft-stop the master (SIGUSR1: the workers close their listeners and end once
        what is in flight has), SIGTERM (HAProxy's hard stop: the rest is cut) if it still
        runs after ``grace``, SIGKILL to the group after TERM_WAIT more."""
        pid = self.master_pid
        if pid is None:
            return
        self._stopping = True
        began = time.monotonic()
        # Closed first: a new client is refused at once, not queued where nobody accepts.
        self.drop_listeners()
        send = os.killpg if self._proc is not None else os.kill  # (our child leads a group)
        how = "soft"
        if grace <= 0 or not await _ended(os.kill, pid, signal.SIGUSR1, grace):
            how = "hard" if await _ended(send, pid, signal.SIGTERM, TERM_WAIT) else "killed"
        if how == "killed":
            with contextlib.suppress(ProcessLookupError):
                send(pid, signal.SIGKILL)
            await wait_pid_exit(pid)
        if self._proc is not None:
            self._proc.wait()
            # Workers of an old generation share the group: none may outlive the master.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        await self._close_relay()
        self.master_pid = self.worker_pid = None
        self._stopping = False
        cut = grace > 0 and how != "soft"  # (the grace ran out: connections were cut)
        event(log, "haproxy_stopped", level=logging.WARNING if cut else logging.INFO,
              master_pid=pid, how=how, took_s=round(time.monotonic() - began, 2),
              reason=reason)  # fmt: skip

    async def _refuse_taken_ports(self) -> None:
        """SO_REUSEPORT would let HAProxy share a port another process listens on."""
        assert self.settings.config_path is not None
        try:
            text = await asyncio.to_thread(self.settings.config_path.read_text)
        except OSError:
            return  # HAProxy itself reports a config file it cannot read
        master = self.master_pid if self.alive else None
        path = str(self.settings.config_path)
        held = self.listeners.inodes() if self.listeners is not None else set()
        clashes = await asyncio.to_thread(
            lambda: ports.foreign_listeners(text, ports.family(master), path, held)
        )
        if clashes:
            raise HAProxyProcessError(
                "frontend port already in use, HAProxy would share it (SO_REUSEPORT): "
                + "; ".join(str(clash) for clash in clashes)
            )

    def output_tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._output)[-lines:])

    # --- internals ------------------------------------------------------------------------

    async def _wait_for_worker(
        self, old_workers: set[int], timeout: float, baseline: ProcInfo | None
    ) -> int:
        deadline = time.monotonic() + timeout
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                await asyncio.sleep(0.05)  # its last words reach the relay
                raise HAProxyProcessError(
                    f"HAProxy exited with status {self._proc.returncode}:\n{self.output_tail()}"
                )
            try:
                proc = await self.master.show_proc()
                if baseline is not None and proc.failed_reloads > baseline.failed_reloads:
                    raise HAProxyProcessError(
                        f"HAProxy could not load the new config; the old worker keeps "
                        f"serving:\n{self.output_tail()}"
                    )
                new = [pid for pid in proc.workers if pid not in old_workers]
                if new and await self._serves(new[0]):
                    self.master_pid = proc.master_pid or self.master_pid
                    self.worker_pid = new[0]
                    return new[0]
                last_error = f"workers {list(proc.workers)}, waiting for a new one"
            except HAProxySocketError as err:  # the master re-executes during a reload
                last_error = str(err)
            await asyncio.sleep(POLL)
        raise HAProxyProcessError(
            f"no new HAProxy worker within {timeout}s ({last_error}):\n{self.output_tail()}"
        )

    async def _serves(self, worker: int) -> bool:
        """The admin socket is answered by ``worker`` (it has taken the listeners over)."""
        if self.runtime is None:
            return True
        try:
            return (await self.runtime.info()).get("Pid") == str(worker)
        except HAProxySocketError:
            return False

    async def _close_relay(self, drain: bool = True) -> None:
        """Stop relaying HAProxy's output; ``drain``: it exited, relay its last lines first."""
        relay, self._relay = self._relay, None
        pipe, self._pipe = self._pipe, None
        if pipe is not None and not drain:
            pipe.close()  # the relay reads EOF and ends
        if relay is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(relay, 1.0)
        if pipe is not None:
            pipe.close()

    async def _relay_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        relay = OutputRelay(self._output, lambda: self._stopping)
        self._pipe, _ = await loop.connect_read_pipe(lambda: relay, proc.stdout)
        try:
            await relay.done
        finally:
            relay.flush()  # (cancelled: the notices counted so far are not lost)


class Supervisor:
    """Restarts the managed HAProxy when it dies, backing off when it keeps dying.

    ``restart`` is called after the delay (the controller: under its lock, it applies the
    desired state, which starts HAProxy); ``interval`` is the current restart_interval.
    """

    def __init__(
        self,
        haproxy: ManagedHAProxy,
        restart: Callable[[], Awaitable[None]],
        interval: Callable[[], float],
        clock: Callable[[], float],
    ) -> None:
        self.haproxy = haproxy
        self._restart = restart
        self._interval = interval
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.stopping = False
        self.first_crash = False  # HAProxy died after a stable run, not restarted yet

    def watch(self) -> None:
        """Watch the running master (a no-op while watching already)."""
        if not self.stopping and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        self.stopping = True
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _watch(self) -> None:
        failures = 0
        while not self.stopping:
            began = self._clock()
            status = await self.haproxy.wait_exit()
            if self.stopping:
                return
            # A long healthy run forgives earlier crashes; a crash loop backs off.
            failures = 1 if self._clock() - began > STABLE_RUN else failures + 1
            delay = restart_delay(failures, self._interval())
            self.first_crash = not delay
            if delay:  # not back at once: clients are refused rather than kept waiting
                self.haproxy.drop_listeners()
            event(_controller_log, "haproxy_exited", level=logging.ERROR, status=status,
                  restart_in_s=round(delay, 1), output=self.haproxy.output_tail(5))  # fmt: skip
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._restart()
            except BaseException:
                self.haproxy.drop_listeners()  # nobody is coming to accept what waits
                raise
            finally:
                self.first_crash = False


def restart_delay(failures: int, interval: float) -> float:
    """Seconds before restarting after the ``failures``-th crash in a row: the first one
    is restarted at once (an outage costs more than a retry), a crash loop backs off."""
    if failures <= 1:
        return 0.0
    return min(MAX_RESTART_DELAY, max(interval, 0.5) * 2 ** (failures - 2))


async def _ended(send: Callable[[int, int], None], pid: int, sig: int, wait: float) -> bool:
    """Send ``sig`` to ``pid``; whether it exited within ``wait`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        send(pid, sig)
    try:
        async with asyncio.timeout(wait):
            await wait_pid_exit(pid)
    except TimeoutError:
        return False
    return True


async def wait_pid_exit(pid: int) -> None:
    """Return when process ``pid`` has exited (a pidfd turns readable: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, its parent has not reaped it yet) is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # (no /proc: kill's answer stands)
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] != "Z"
