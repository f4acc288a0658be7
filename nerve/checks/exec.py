"""exec check: run a command from the config file; exit status 0 means up.

A command nerve cannot start for want of its own resources (fork, or the thread asyncio
starts to wait for it, at the pids limit; a pipe at the open-file limit) gives no verdict
(``nerve.checks.base.no_verdict``), not a failure; so does a command whose program cannot be
started at all (missing, not executable: nerve/exec_program.py), which says nothing
about the service either.

The command runs in its own process group so that a timeout kills it *and* whatever it
started (a shell pipeline, curl, ...). Its combined stdout/stderr is kept for /status.
A string command goes through ``/bin/sh -c``; a list is executed directly.

The verdict is the command's exit status, as soon as it exited: a background process it
left (``daemon &``) may hold the output pipe open for ever, so once the command exited
the pipe gets ``PIPE_GRACE`` to deliver what is still in it, then it is closed (no fd
kept per round). Such a leftover is not waited for; what is left of the command's process
group gets SIGTERM once the verdict is in, and SIGKILL if it ignores that (a leftover per
round would pile up to the container's pids limit: nerve/checks/leftovers.py; one that
detached with ``setsid`` is its own business).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from nerve.checks.base import BaseCheck, CheckFailed, NoVerdict, Passed, clip
from nerve.checks.leftovers import Leftovers
from nerve.exec_program import NOT_STARTED, SHELL_NOT_RUN, program_problem
from smartstack.logs import event

log = logging.getLogger("nerve.checks")

MAX_OUTPUT = 4096
PIPE_GRACE = 0.05  # seconds: after the exit, for output still on its way (within the timeout)


_pid1_warned = False


def warn_if_pid1() -> None:
    """Once per process, when nerve is PID 1 (a container started with ``--entrypoint nerve``
    or k8s ``command: [nerve]``, without an init): what a command leaves behind, or what a
    timeout's kill orphans, is re-parented to PID 1, and nerve only reaps its own children
    (asyncio's child watcher waits for those pids; a reaper of every pid could take one of
    them from it first), so such orphans stay zombies for the container's life."""
    global _pid1_warned
    if _pid1_warned or os.getpid() != 1:
        return
    _pid1_warned = True
    hint = "run nerve under an init: docker run --init, tini or dumb-init as the entrypoint"
    event(log, "nerve_is_pid1", level=logging.WARNING, hint=hint)


def argv_for(command: str | list[str]) -> list[str]:
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


class ExecCheck(BaseCheck):
    type = "exec"

    def __init__(self, name: str, command: str | list[str], timeout: float) -> None:
        super().__init__(name, timeout)
        self.command = command
        self.argv = argv_for(command)
        text = command if isinstance(command, str) else " ".join(command)
        self.leftovers = Leftovers(name, clip(text, 120))
        # Its program ran once: gone afterwards, the app was removed with it (an uninstall, a
        # release swap): a failure, as before, not the no-verdict of a typo never run.
        self.ran = False
        warn_if_pid1()  # at start (the checks are built from the config), once

    async def probe(self) -> Passed:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        self.leftovers.sweep()  # the previous round's, before this one may add to them
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # own process group: a timeout kills all of it
            )
        except BlockingIOError as exc:  # EAGAIN: nerve is at its process (pids) limit
            raise NoVerdict(f"cannot start the command: {exc}") from exc
        except NOT_STARTED as exc:  # the program is missing or not executable (a typo)
            program = exc.filename or self.argv[0]
            raise self._not_started(f"{program}: {exc.strerror}") from exc
        tail = bytearray()
        assert protocol.stdout is not None
        reading = loop.create_task(read_tail(protocol.stdout, MAX_OUTPUT, tail))
        try:
            # Process.wait() would also wait for the pipe, held by any leftover child.
            await protocol.exited
            grace = min(PIPE_GRACE, deadline - loop.time() - PIPE_GRACE / 5)
            await asyncio.wait({reading}, timeout=max(0.0, grace))
        except BaseException:
            # Cancelled by the timeout (or by shutdown): nothing may outlive the check.
            await _kill_group(transport, protocol)
            raise
        finally:
            reading.cancel()
            transport.close()  # our end of the pipe, whoever still holds the other end
        self.leftovers.terminate(transport.get_pid())  # its group, never nerve's
        returncode = transport.get_returncode()
        output = bytes(tail).decode(errors="replace")
        if returncode in SHELL_NOT_RUN and (problem := self._shell_not_run()):
            # /bin/sh could not run the string's first word (an absolute path): not started.
            raise self._not_started(f"{problem} (exit status {returncode})")
        self.ran = True
        if returncode != 0:
            detail = f"exit status {returncode}"
            if output.strip():
                detail += f": {clip(output, 200)}"
            raise CheckFailed(detail, output)
        return Passed("exit status 0", output)

    def _not_started(self, why: str) -> Exception:
        if self.ran:  # (review s32: an uninstalled app's check gave no verdict for ever)
            return CheckFailed(f"the program that ran before cannot start now: {why}", "")
        return NoVerdict(f"cannot start the program {why}")

    def _shell_not_run(self) -> str | None:
        """After /bin/sh's 127 or 126: the string's first word, when it could not be run."""
        return program_problem(self.command) if isinstance(self.command, str) else None

    async def close(self) -> None:
        self.leftovers.sweep()  # a removed check's leftovers do not wait for a next round


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's stream protocol, telling when the process exited (not when its pipes
    closed, which is all Process.wait() tells on Python 3.11)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def read_tail(stream: asyncio.StreamReader, limit: int, tail: bytearray) -> None:
    """Read to EOF into ``tail``, keeping only the last ``limit`` bytes (a chatty command
    must not make nerve hold all it printed); what was read stays there if cut short."""
    while chunk := await stream.read(64 * 1024):
        tail += chunk
        del tail[:-limit]


async def _kill_group(transport: asyncio.SubprocessTransport, protocol: _Protocol) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(transport.get_pid(), signal.SIGKILL)
    transport.close()  # a child of its own session may hold the pipe: never wait for it
    with contextlib.suppress(Exception):
        # SIGKILL cannot be ignored: the reap is immediate. Shielded so a second
        # cancellation cannot leave a zombie behind.
        await asyncio.shield(protocol.exited)
