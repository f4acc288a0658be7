"""exec check: run a command from the config file; exit status 0 means up.

The command runs in its own process group so that a timeout kills it *and* whatever it
started (a shell pipeline, curl, ...). Its combined stdout/stderr is kept for /status.
A string command goes through ``/bin/sh -c``; a list is executed directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from nerve.checks.base import BaseCheck, CheckFailed, Passed, clip

MAX_OUTPUT = 4096


def argv_for(command: str | list[str]) -> list[str]:
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


class ExecCheck(BaseCheck):
    type = "exec"

    def __init__(self, name: str, command: str | list[str], timeout: float) -> None:
        super().__init__(name, timeout)
        self.argv = argv_for(command)

    async def probe(self) -> Passed:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # own process group: a timeout kills all of it
        )
        try:
            assert process.stdout is not None
            raw = await read_tail(process.stdout, MAX_OUTPUT)
            await process.wait()
        except BaseException:
            # Cancelled by the timeout (or by shutdown): nothing may outlive the check.
            await _kill_group(process)
            raise
        output = raw.decode(errors="replace")
        if process.returncode != 0:
            detail = f"exit status {process.returncode}"
            if output.strip():
                detail += f": {clip(output, 200)}"
            raise CheckFailed(detail, output)
        return Passed("exit status 0", output)


async def read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read to EOF, keeping only the last ``limit`` bytes (a chatty command must not make
    nerve hold all it printed)."""
    tail = bytearray()
    while chunk := await stream.read(64 * 1024):
        tail += chunk
        del tail[:-limit]
    return bytes(tail)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        # SIGKILL cannot be ignored: the reap is immediate. Shielded so a second
        # cancellation cannot leave a zombie behind.
        await asyncio.shield(process.wait())
