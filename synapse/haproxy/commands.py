"""Running the operator's commands and `haproxy -c`: validation and Airbnb's reload_command.

Subprocesses run without blocking the event loop and are killed (with their
process group) when they outlive their timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass

from smartstack.spawn_limits import limit_reached
from synapse.atomic import write_atomic
from synapse.haproxy.settings import Settings

OUTPUT_LIMIT = 4000  # characters of a command's output kept for logs and /status


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str  # stdout and stderr, interleaved, tail only

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def answered(self) -> bool:
        """Whether the command ran to its own exit: not timed out or killed by a signal
        (< 0, or 128+N as a shell reports a child's), not unable to run (126, 127)."""
        code = self.returncode
        return code >= 0 and code not in (126, 127) and not 128 < code < 128 + signal.NSIG


class CheckUnanswered(Exception):
    """The config check gave no verdict (timed out, killed, not run): the candidate may be
    valid, so it is retried like a failed reload, never refused as invalid."""


class CandidateUnwritten(CheckUnanswered):
    """The candidate could not be written (a full or read-only disk): the check did not run."""


async def run_command(args: str | list[str], timeout: float) -> CommandResult:
    """Run a shell command (str) or an argv (list); a timeout counts as a failure."""
    spawn = asyncio.create_subprocess_shell if isinstance(args, str) else None
    kwargs = {
        "stdin": asyncio.subprocess.DEVNULL,
        "stdout": asyncio.subprocess.PIPE,
        "stderr": asyncio.subprocess.STDOUT,
        "start_new_session": True,  # so a timeout can kill whatever the shell started
    }
    if spawn is not None:
        starting = asyncio.ensure_future(spawn(args, **kwargs))  # type: ignore[arg-type]
    else:
        starting = asyncio.ensure_future(asyncio.create_subprocess_exec(*args, **kwargs))  # type: ignore[arg-type]
    try:
        # Shielded: a cancel while the process starts would kill the shell alone (asyncio's
        # cleanup), leaving what it started (a reload script's children) running.
        proc = await asyncio.shield(starting)
    except (OSError, RuntimeError) as err:  # (RuntimeError: asyncio's waitpid thread)
        if (limit := limit_reached(err)) is None and isinstance(err, RuntimeError):
            raise
        reached = f": {limit} is reached" if limit else ""
        return CommandResult(127, f"cannot run {args!r}: {err}{reached}")
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            _kill_group(await starting)
        raise
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return CommandResult(-1, f"{args!r} timed out after {timeout}s")
    except asyncio.CancelledError:  # (synapse stops during a reload: not left running)
        _kill_group(proc)
        raise
    text = out.decode(errors="replace").strip()
    return CommandResult(proc.returncode or 0, text[-OUTPUT_LIMIT:])


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill the command and whatever it started (its own session: start_new_session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def validate_config(settings: Settings, text: str, timeout: float) -> str | None:
    """Write the candidate and check it; None when valid, else HAProxy's message;
    CheckUnanswered when the check gave no verdict (a loaded machine, slow DNS: a
    refusal would stand until the desired state changes).

    The Airbnb ``check_command`` (with ``do_checks``) wins; otherwise ``haproxy -c``.
    The candidate stays on disk, so an operator can inspect a config that failed. A
    candidate that cannot be written (a full or read-only disk) was not checked either.
    """
    path = settings.candidate_path
    if path is None:
        return None
    try:
        await asyncio.to_thread(write_atomic, path, text)
    except OSError as err:  # (strerror: the temp file's random name would vary per try)
        why = f"cannot write {path}: {err.strerror or err}"
        raise CandidateUnwritten(f"the config check did not run: {why}") from err
    if settings.check_command:
        result = await run_command(settings.check_command, timeout)
    else:
        result = await run_command([settings.binary, "-c", "-f", str(path)], timeout)
    if result.ok:
        return None
    if not result.answered:
        detail = result.output[-500:] or f"it exited with {result.returncode}"
        raise CheckUnanswered(f"the config check gave no verdict: {detail}")
    if not settings.check_command and "[ALERT]" not in result.output:
        # HAProxy says what is wrong with a config in ALERT lines; without one the binary
        # itself failed (a missing library, a broken wrapper): refusing the candidate
        # would stand until the desired state changes, long after the binary is fixed.
        detail = result.output[-500:] or "no output"
        raise CheckUnanswered(
            f"the config check gave no verdict: {settings.binary} exited with "
            f"{result.returncode} without an [ALERT] about the config: {detail}"
        )
    return _errors_first(result.output) or f"check exited with {result.returncode}"


def _errors_first(output: str) -> str:
    """HAProxy's ALERT lines are the message; NOTICE/WARNING lines only add noise."""
    lines = [line for line in output.splitlines() if line.strip()]
    alerts = [line for line in lines if "[ALERT]" in line]
    return "\n".join(alerts or lines)
