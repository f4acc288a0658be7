"""The installer: gets a config into HAProxy and keeps the config file equal to what it runs.

- ``write``: the config file's new text (written in the background, atomically, by
  ``synapse.haproxy.configfile``), with the ``Layout`` it was rendered from;
- ``validate``: ``haproxy -c`` or the Airbnb ``check_command`` on the candidate file
  (which stays on disk, so a refused config can be inspected);
- ``dump_server_state``: `show servers state` into the server-state file, for
  `load-server-state-from-file` in the new worker;
- ``install``: swap the file in (on disk before HAProxy reads it), make HAProxy load it
  (start or master-CLI reload in managed mode, else ``reload_command``) and confirm the
  new worker; when that fails, or is cancelled (synapse stops), the previous text goes
  back into the file; managed mode marks the window on disk (``loadmark``);
- ``start_from_file``: start a managed HAProxy that is down from the file as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from smartstack.logs import Streak, event
from smartstack.paths_check import PERMISSION, READ_ONLY, READ_ONLY_MOUNT, diagnose
from synapse.atomic import write_atomic
from synapse.config import HAProxyConfig
from synapse.config import ManagedHAProxy as ManagedConfig
from synapse.contract import ApplyOutcome, ApplyResult
from synapse.haproxy import server_wait
from synapse.haproxy.bridge import Layout
from synapse.haproxy.command_reload import CommandReload
from synapse.haproxy.commands import (
    CandidateUnwritten,
    CheckUnanswered,
    run_command,
    validate_config,
)
from synapse.haproxy.configfile import ConfigFile
from synapse.haproxy.configtext import ParsedConfig
from synapse.haproxy.desired import DesiredConfig
from synapse.haproxy.edge_sync import EdgeSync
from synapse.haproxy.failures import Failures
from synapse.haproxy.hosts import without_unaddressed
from synapse.haproxy.loadmark import LoadMark
from synapse.haproxy.managed import HAProxyProcessError, ManagedHAProxy, PortsTaken
from synapse.haproxy.metrics import HAProxyMetrics
from synapse.haproxy.ops import Plan, Reload
from synapse.haproxy.pids_room import pids_free, too_little_room
from synapse.haproxy.port_taken import PortWait
from synapse.haproxy.ports import Clash
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.settings import Settings
from synapse.haproxy.sockets import HAProxySocketError

log = logging.getLogger("synapse.haproxy")
# Around HAProxy's part of a reload (the controller's ``ReloadWindow.opened``).
Window = Callable[[], contextlib.AbstractAsyncContextManager[None]] | None
DISK_RETRY_S = 5.0  # at most between tries of a reload that failed writing a file
EDGE_UNWRITTEN = "cannot write the route maps or the crt-list"
# A start whose candidate a full disk keeps out (nothing runs: synapse and HAProxy died, the
# host rebooted) serves the config file instead, the last one HAProxy ran, and the retry
# comes at once: it plans against that HAProxy, so today's servers go in at runtime while the
# candidate waits for space (before, every service was refused until space came back).
SERVE_FILE = "cannot write the new config: serving the file on disk"


def remove_state_file(path: Path) -> None:
    """No server-state file (there is none: fine)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def start_blocked(settings: Settings) -> str | None:
    """Why a start or master reload of HAProxy cannot make its master socket, admin
    sockets or pid file (their directory read-only or not writable), or None.

    A start would exit at once; a reload is worse: the re-executed master cannot bind its
    master socket and exits ("Non-recoverable mworker wait-mode error"), every service
    refused (review s29: a SIGHUP adding a service). synapse starts all the same on such
    a host (its start used to exit 2), so neither is tried: the running HAProxy keeps
    serving (changes of servers go in at runtime), and the reload or start is retried every
    few seconds, as a full disk's write, not after the backoff's minute."""
    paths = [settings.master_socket, settings.pid_file, *map(Path, settings.shared_sockets)]
    for path in paths:
        # (the HAProxy synapse starts gets its missing directories made, ``make_dirs``:
        # then what counts is whether they can be, review s34)
        found = diagnose(path, create=settings.launch) if path is not None else None
        if found is not None and found[1] in (READ_ONLY, READ_ONLY_MOUNT, PERMISSION):
            return f"cannot make {path}: {found[0]}"
    return None


class InstallFailed(Exception):
    """HAProxy does not run the new config (the old one still serves). ``invalid``: the
    message is the config check's (an unchecked start failed because of the config);
    ``unanswered``: the config check gave no verdict (nothing was installed); ``cap``: the
    longest wait before the next try (None: the reload gate's own)."""

    def __init__(
        self,
        message: str,
        invalid: bool = False,
        unanswered: bool = False,
        disk: bool = False,
        taken: list[Clash] | None = None,
    ) -> None:
        super().__init__(message)
        self.invalid, self.unanswered, self.disk = invalid, unanswered, disk
        self.taken = taken or []  # the frontend ports other processes listen on
        # A file that could not be written (a full disk): a try costs next to nothing, and
        # waiting the gate's full backoff (60 s) delayed the reload long after space came back.
        self.cap = DISK_RETRY_S if disk else None


class Installer:
    def __init__(
        self,
        config: HAProxyConfig,
        settings: Settings,
        runtime: list[RuntimeClient],
        managed: ManagedHAProxy | None,
        metrics: HAProxyMetrics,
        clock: Callable[[], float],
        ports: PortWait | None = None,
    ) -> None:
        self.config, self.settings = config, settings
        self.ports = ports  # managed: services' frontends on ports another process holds
        self.runtime = runtime
        # Other kept connections' releases (the settle reads', the state dumper's).
        self.releases: list[Callable[[], Awaitable[None]]] = []
        self.managed = managed
        self.metrics = metrics
        self._clock = clock
        path = settings.config_path
        self.file = ConfigFile(path) if path is not None and config.do_writes else None
        self.layout: Layout | None = None  # what the file was rendered from; None: unknown
        self._loaded = False
        self.read_all = False  # after the reload: the dump failed, an older state file stays
        # (a read-only disk fails the dump before every retried reload: said once a streak)
        self._dump_streak = Streak()
        self._reloaded_pid: str | None = None  # reload_command: the new process that answered
        self._command_reload = CommandReload(runtime[0] if runtime else None, clock)
        # Managed: whether HAProxy runs the file (a restart adopts HAProxy and trusts it).
        self.mark = LoadMark(path) if self.file is not None and managed is not None else None
        if self.file is not None and self.mark is not None:  # (each write: the marker names it)
            self.file.write = self.mark.write_config
        # Route maps and crt-list: written before HAProxy reads the config.
        self.edge = EdgeSync(config, settings, runtime, metrics)

    def configure(self, config: HAProxyConfig, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self.edge.configure(config, settings)

    # --- the config file ------------------------------------------------------------------

    def warn_without_validation(self) -> None:
        if not self.settings.can_validate and self.config.do_writes:
            detail = "no check_command and no haproxy binary: configs are not validated"
            event(log, "haproxy_validation_unavailable", level=logging.WARNING,
                  binary=self.settings.binary, detail=detail)  # fmt: skip

    async def load(self) -> None:
        if self.file is not None and not self._loaded:
            await self.file.load()
            if self.mark is not None:
                await self.mark.load(self.file.exists)
            self._loaded = True

    def unconfirmed(self, plan: Plan) -> Plan:
        """``plan``, with a reload when HAProxy may not run the file (``loadmark``), or a
        start when the managed HAProxy is down. A worker may answer then: the old one still
        exiting, or a new master's (``launch: false``) while its CLI does not answer yet
        (its re-exec after the start): planned on its answers, the crash restart's apply
        started nothing and no one adopted or watched that master (CI: 20 s, until an apply
        needed a reload)."""
        if plan.reload is None and self.managed is not None and not self.managed.alive:
            plan = Plan(plan.ops, Reload((("start", "HAProxy is not running"),)), plan.active)
        return self.mark.with_reload(plan) if self.mark is not None else plan

    def write(self, config: DesiredConfig, layout: Layout | None) -> bool:
        """Make ``config`` the config file's text; ``layout`` made it. True when it changed."""
        if self.file is None:
            return False
        self.layout = layout
        if not self.file.set(config.parts, lambda: config.parsed):  # (lazy: DesiredConfig)
            return False
        self.metrics.config_writes.inc()
        return True

    async def flush(self) -> None:
        """The file on disk (OSError when it cannot be written)."""
        if self.file is not None:
            await self.file.flush()

    async def _restore(self, text: str, parsed: ParsedConfig | None, layout: Layout | None) -> None:
        assert self.file is not None
        self.file.set((text,), parsed)
        self.layout = layout
        with contextlib.suppress(OSError):  # the writer keeps trying, and says so
            await self.file.flush()

    # --- validating and installing -----------------------------------------------------------

    async def validate(self, candidate: DesiredConfig) -> str | None:
        """None when valid (or nothing can validate), else the checker's message;
        InstallFailed (retried, not refused) when the check gave no verdict or a file it
        reads could not be written (a full disk says nothing about the config)."""
        try:
            await self.edge.before_read()  # also when nothing validates: others reload
            server_wait.before_read(candidate.text, self.config)
        except OSError as err:  # (a full disk: no verdict about the config)
            raise InstallFailed(f"{EDGE_UNWRITTEN}: {err}", disk=True) from err
        except RuntimeError as err:
            return f"{EDGE_UNWRITTEN}: {err}"
        ours = self.managed is not None and self.settings.launch  # (our child: our cgroup)
        if ours and (short := too_little_room(candidate.text, pids_free())) is not None:
            self.edge.refused()
            raise InstallFailed(short, unanswered=True)
        if not self.settings.can_validate:
            return None
        try:
            error = await validate_config(self.settings, candidate.text, self.config.reload_timeout)
        except CheckUnanswered as err:
            self.edge.refused()
            unwritten = isinstance(err, CandidateUnwritten)
            raise InstallFailed(str(err), unanswered=True, disk=unwritten) from err
        if error is not None:
            self.edge.refused()
        return error

    @property
    def start_checks(self) -> bool:
        """Whether a managed start checks a config as `haproxy -c` would: it is the same
        binary (an operator's check_command is always run)."""
        return self.managed is not None and not self.settings.check_command

    async def dump_server_state(self, runtime_ok: bool) -> None:
        """Save runtime states for `load-server-state-from-file` in the new worker.

        A dump that cannot be written (a full or read-only disk) leaves an older file, whose
        states the new worker would take: a server back since then restored into MAINT
        (503s until synapse planned its backend). So that file goes (an unlink works on a
        full disk) and the new worker starts from the config's states; when it cannot go
        either, ``read_all`` has every backend read and planned right after the reload.
        """
        self.read_all = False
        path = self.settings.state_file
        if path is None:
            return
        try:
            if self.runtime and runtime_ok:
                text = await self.runtime[0].dump_servers_state()
                # (rows of servers without an address left out: DOWN in the new worker even
                # once they have one; filtered in the thread, ~15 ms at 20,000 rows)
                await asyncio.to_thread(lambda: write_atomic(path, without_unaddressed(text)))
            elif not await asyncio.to_thread(path.exists):
                # An empty dump: HAProxy warns about a missing state file at every start.
                await asyncio.to_thread(write_atomic, path, "1\n")
            self._dump_streak.end()
        except HAProxySocketError as err:  # (no answer: the file the dumper keeps stays)
            event(log, "haproxy_state_dump_failed", level=logging.WARNING, error=str(err))
        except OSError as err:
            detail = "no older state file is left: the new HAProxy takes the config's states"
            try:
                await asyncio.to_thread(remove_state_file, path)
            except OSError as gone:
                self.read_all = True
                detail = f"cannot remove the old state file ({gone.strerror or gone}): " \
                         "every backend is read and planned right after the reload"  # fmt: skip
            error = err.strerror or str(err)
            level = (
                logging.WARNING if self._dump_streak.note(f"{error} {detail}") else logging.DEBUG
            )
            event(log, "haproxy_state_dump_failed", level=level, error=error, detail=detail)

    async def install(
        self, candidate: DesiredConfig, layout: Layout, checked: bool = True, window: Window = None
    ) -> bool:
        """Write ``candidate`` and make HAProxy run it; InstallFailed (and the previous file
        back) when it does not. True when the file's text changed. ``window``: around
        HAProxy's part of a reload (changes of servers go in beside it: ``reload_window``).

        ``checked`` False (a first start, ``start_checks``): when the start fails the
        candidate is checked then, and a refused one leaves the files as a refused check
        would have (no config file when there was none)."""
        assert self.file is not None  # reloads need a config file
        previous = self.file.text, self.file.parsed, self.layout
        if self.mark is not None:
            try:  # (on disk before the candidate: a synapse dying after it reloads once)
                await self.mark.installing()
            except OSError as err:
                # (not str(err): it names the write's temporary file, another every retry,
                # and the failure is logged once per streak of the same text)
                why = err.strerror or str(err)
                raise InstallFailed(f"cannot write {self.mark.path}: {why}", disk=True) from err
        wrote = self.write(candidate, layout)
        try:
            await self._edge_files(candidate.text)
            await self._swap_in(window or contextlib.nullcontext)
        except InstallFailed as failed:
            error = None
            if not checked:  # (a check without a verdict: the start's failure stands)
                with contextlib.suppress(InstallFailed):
                    error = await self.validate(candidate)
            if error is None and failed.taken and self.ports is not None:  # (port_taken)
                path, services = self.settings.candidate_path, layout.services
                error = await self.ports.refusal(candidate.text, path, services, failed.taken)
            self.edge.refused()
            if previous[0] is not None:
                await self._restore(*previous)  # the old config is still what HAProxy runs
            elif error is not None:
                await self.file.remove()
                self.layout = None
            if error is not None:
                raise InstallFailed(error, invalid=True) from failed
            raise
        except BaseException:  # cancelled (synapse stops): HAProxy ran the previous text
            self.edge.refused()
            if previous[0] is not None:  # (the marker stays: it may have loaded the candidate)
                await self._restore(*previous)
            raise
        await self._confirmed()
        return wrote

    async def _confirmed(self) -> None:
        """HAProxy runs the file (started or reloaded)."""
        if self.mark is not None:
            await self.mark.loaded()
        await self.release_connections()
        await self.edge.started()

    async def install_unreloaded(
        self, candidate: DesiredConfig, layout: Layout, reload: Reload, failures: Failures
    ) -> ApplyResult:
        """do_reloads: false (Airbnb): install the valid config, leave reloading to others."""
        try:
            error = await self.validate(candidate)
        except InstallFailed as err:  # (no verdict: checked again after a backoff)
            return failures.reload_failed(str(err), reload, None, err.unanswered, err.cap)
        if error is not None:
            return failures.invalid(error, reload.reasons, candidate.text)
        failures.skipped("do_reloads", reload.summary)
        written = self.write(candidate, layout)
        await self.flush()  # others reload it: on disk before apply returns
        return ApplyResult((), ApplyOutcome.DISABLED, (), written)

    async def shut_down(self, managed_config: ManagedConfig | None) -> None:
        """The end of a stop, under the controller's lock: connections released, the file on
        disk (what HAProxy ran last), a managed HAProxy left serving or stopped."""
        await self.release_connections()
        if self.file is not None:
            await self.file.close()
        if self.managed is not None:
            await self.managed.release_or_stop(managed_config)

    async def release_connections(self) -> None:
        """Close kept admin connections: after a reload or start they reach the old process,
        and HAProxy keeps that process alive while one is open (until `stats timeout`)."""
        for client in self.runtime:
            await client.release()
        for release in self.releases:
            await release()

    async def _edge_files(self, text: str) -> None:
        try:
            await self.edge.before_read()
            server_wait.before_read(text, self.config)
        except (OSError, RuntimeError) as err:
            disk = isinstance(err, OSError)
            raise InstallFailed(f"{EDGE_UNWRITTEN}: {err}", disk=disk) from err

    async def _swap_in(
        self, window: Callable[[], contextlib.AbstractAsyncContextManager[None]]
    ) -> None:
        """Make HAProxy load the config file: start, master reload, or reload_command (the
        last two inside ``window``)."""
        try:
            await self.flush()  # HAProxy reads the file: it must be on disk
        except OSError as err:
            raise InstallFailed(str(err), disk=True) from err
        if self.managed is not None:
            if blocked := await asyncio.to_thread(start_blocked, self.settings):
                verb = "reload" if self.managed.alive else "start"
                failed = InstallFailed(f"cannot {verb} HAProxy: {blocked}")
                failed.cap = DISK_RETRY_S  # (not `disk`: the file on disk would fail alike)
                raise failed
            try:
                if self.managed.alive:
                    async with window():
                        await self.managed.reload()
                else:
                    await self.managed.start()
            except (HAProxyProcessError, HAProxySocketError) as err:
                taken = err.clashes if isinstance(err, PortsTaken) else None
                raise InstallFailed(str(err), taken=taken) from err
            return
        reload = self._command_reload
        before, self._reloaded_pid = await reload.answering(), None
        assert self.config.reload_command is not None
        async with window():
            result = await run_command(self.config.reload_command, self.config.reload_timeout)
            if not result.ok:
                raise InstallFailed(
                    f"reload_command exited with {result.returncode}: {result.output[-1000:]}"
                )
            self._reloaded_pid = await reload.new_worker(before, self.config.reload_timeout)

    @property
    def serving_pid(self) -> str | None:
        """The pid of the worker the last reload or start was confirmed with (None: not
        confirmed): what the admin socket must answer with before the new one is read."""
        if self.managed is not None:
            pid = self.managed.worker_pid
            return None if pid is None else str(pid)
        return self._reloaded_pid

    async def start_from_file(self) -> bool:
        """Start the managed HAProxy (when down) from the config file as it is; False when
        there is nothing to start or it did not start (logged)."""
        if self.managed is None or self.managed.alive:
            return False
        if self.file is None or not self.file.exists:
            return False
        with contextlib.suppress(OSError):  # else the disk has an older good config: still good
            await self.file.flush()
        if not await asyncio.to_thread(self.file.path.exists):  # (a first candidate, unwritten)
            return False
        if await asyncio.to_thread(start_blocked, self.settings):
            return False  # (HAProxy would fail at once: the gate's install says why, retried)
        with contextlib.suppress(OSError):  # (else the start fails and says why, as before)
            server_wait.before_read(self.file.text or "", self.config)
        try:
            self.edge.refused()  # the maps HAProxy held (when known), not the refused ones
            await self.managed.start()
        except HAProxyProcessError as err:
            event(log, "haproxy_start_failed", level=logging.ERROR, error=str(err)[:2000])
            return False
        await self._confirmed()
        return True
