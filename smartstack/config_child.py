"""A daemon's config validated in a short-lived child process, for a daemon on plain models.

pydantic (~9 MB of RSS with its schemas) is needed to validate a config, not to run one. So
a daemon has a child validate (``synapse.config_child``, ``nerve.config_child``): at start a
fork taken before any thread exists (``ForkedValidation``), on SIGHUP ``python -P -m
<daemon>.config_child`` (a fork of a running daemon with threads is not safe;
``child_answer``). A start in a process that already has threads (a library's, gRPC's: an
embedding program, a test run) spawns that command too: a forked child there can hang on a
lock or an object a thread held (CI, round 50: a child spun tearing down an inherited gRPC
object, and the start waited for ever). The child answers one pickled dict on a pipe of its
own (stdout is not read, so a stray print cannot corrupt it): ``{"ok": True, "config": ...,
...}``, ``{"ok": False, "lines": [...]}`` (the ConfigError's lines, word for word what
``-k`` prints) or ``{"ok": False, "crash": "..."}`` (a bug, with its traceback).

Pickled: a pydantic model's pickle names its class by module and name and carries its state;
the daemon has the same classes on the plain base (``smartstack.model_plain``, whose
``__setstate__`` takes that state), so unpickling builds plain instances. The bytes come
only from the daemon's own child, never from elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

from smartstack.spawn_limits import limit_reached, not_started

PROTOCOL = 5
# pydantic scans every installed package's entry points for plugins when it builds its first
# model (~30 ms); a validating child has no use for plugins.
NO_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"
CHILD_TIMEOUT = 120.0  # a 1,000-service config validates in well under a second
TOOK_TOO_LONG = f"validating the config took over {CHILD_TIMEOUT:.0f} s"


def pickled(answer: Callable[[], dict[str, Any]]) -> bytes:
    try:
        return pickle.dumps(answer(), PROTOCOL)
    except BaseException:  # reported to the daemon, which logs it and keeps running
        return pickle.dumps({"ok": False, "crash": traceback.format_exc()[-2000:]}, PROTOCOL)


def write_answer(data: bytes, answer_fd: int | None) -> None:
    """A child's answer, on its answer pipe (else stdout: a person running it by hand)."""
    import sys

    if answer_fd is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    with os.fdopen(answer_fd, "wb") as out:
        out.write(data)


def unpickled(out: bytes, err: bytes, code: int | None = 0, daemon: str = "the daemon") -> dict:
    """A child's answer from its answer pipe (its stderr and exit status tell why when
    there is none). Classes that changed since this process started (an upgrade) are an
    error line: the running config stays, a restart loads the new one."""
    from smartstack.model_plain import StaleModel

    try:
        return pickle.loads(out)
    except StaleModel as exc:
        return {"ok": False, "lines": [f"{exc}; restart {daemon} to load this config"]}
    except (AttributeError, ImportError) as exc:  # a class the child's code has, ours not
        why = f"the validated config names code this process lacks ({exc})"
        return {"ok": False, "lines": [f"{why}: restart {daemon} to load this config"]}
    except Exception as exc:
        why = err.decode(errors="replace")[-2000:] or f"no answer ({type(exc).__name__})"
        return {"ok": False, "crash": f"(the validating child exited with {code})\n{why}"}


def answer_lines(answer: dict[str, Any]) -> list[str]:
    """The error lines of a child's answer that is not ok."""
    if "lines" in answer:
        return list(answer["lines"])
    crash = str(answer.get("crash") or "no answer").strip().splitlines()
    return [f"validating the config failed: {crash[-1] if crash else 'no answer'}"]


def threads_running() -> int:
    """This process's threads as the kernel counts them: a C library's (gRPC's) too, which
    ``threading`` does not see."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # (no /proc)
        import threading

        return threading.active_count()


class ForkedValidation:
    """``validate`` run in a forked child (start it before any thread exists): this process
    never imports pydantic; the child does, answers through a pipe and exits. This process
    may do other work meanwhile (import what it needs next) and then take the
    ``answer()``. ``command(answer_fd)``: the same validation as a command, spawned instead
    when this process has threads already (a fork is not safe then)."""

    daemon = "the daemon"

    def __init__(
        self,
        validate: Callable[[], dict[str, Any]],
        command: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.pid, self.read_end, self.failed = 0, -1, ""
        self.spawned: Any = None  # the subprocess.Popen of a spawned child
        read_end, write_end = os.pipe()
        spawn = command is not None and threads_running() > 1
        try:
            if spawn and command is not None:
                self.spawned = _spawned(command(write_end), write_end)
                pid = self.spawned.pid
            else:
                pid = os.fork()
        except OSError as exc:  # (no memory, process limit): the answer says so
            os.close(read_end)
            os.close(write_end)
            how = "spawning" if spawn else "forking"
            self.failed = f"{how} the validating child failed: {exc}"
            return
        if pid == 0:  # the child
            code = 0
            try:
                os.close(read_end)
                os.environ[NO_PLUGINS] = "1"
                data = pickled(validate)
                with os.fdopen(write_end, "wb") as out:
                    out.write(data)
            except BaseException:
                code = 1
            finally:
                os._exit(code)  # no atexit handlers, no flushing of the parent's buffers
        os.close(write_end)
        self.pid, self.read_end = pid, read_end

    def ready(self, timeout: float = 0.0) -> bool:
        """Whether ``answer()`` would not wait: the child has written (or ended)."""
        if self.failed:
            return True
        poller = select.poll()  # (select() refuses an fd from 1024 on)
        poller.register(self.read_end, select.POLLIN)
        return bool(poller.poll(timeout * 1000))  # POLLIN, or POLLHUP: the child ended

    def answer(self) -> dict[str, Any]:
        """The child's answer, read to its end and the child reaped within CHILD_TIMEOUT;
        else an error answer, the child killed (a start says why rather than wait for ever:
        a spawned child's exit, after its answer, runs its interpreter's shutdown too)."""
        if self.failed:
            return {"ok": False, "crash": self.failed}
        if self.read_end < 0:
            raise RuntimeError("the validating child's answer was taken already")
        deadline = time.monotonic() + CHILD_TIMEOUT
        data = self._read(deadline)
        code = None if data is None else self._reaped(deadline)
        if data is None or code is None:
            self._kill()
            return {"ok": False, "lines": [TOOK_TOO_LONG]}
        return unpickled(data, b"", code, self.daemon)

    def _read(self, deadline: float) -> bytes | None:
        """The pipe read to its end, or None when it has not ended by ``deadline``."""
        fd, self.read_end = self.read_end, -1
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        chunks: list[bytes] = []
        try:
            while (left := deadline - time.monotonic()) > 0 and poller.poll(left * 1000):
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
            return None
        finally:
            os.close(fd)

    def _reaped(self, deadline: float) -> int | None:
        """The child's exit status once it ended, or None when it has not by ``deadline``."""
        while (code := self._exited()) is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return code

    def _exited(self) -> int | None:
        if self.spawned is not None:
            return self.spawned.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        if self.spawned is not None:
            self.spawned.wait()
        else:
            os.waitpid(self.pid, 0)


def _spawned(command: list[str], answer_fd: int) -> Any:
    """The validating command started, answering on ``answer_fd`` (its stderr: ours)."""
    import subprocess  # (here: a start that forks never needs it)

    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            pass_fds=(answer_fd,))  # fmt: skip


async def child_answer(
    command: Callable[[int], list[str]], stdin: bytes, daemon: str = "the daemon"
) -> dict[str, Any]:
    """Run a validating child, ``command(answer_fd)``, with ``stdin`` and take its answer
    while the event loop runs on; a child that does not answer within CHILD_TIMEOUT is an
    error answer. Killed and reaped if this is cancelled (the daemon stops): no child
    outlives it."""
    import asyncio  # (not at the top: a start forks its child before asyncio is loaded)

    try:
        proc, read_end = await _spawn(command)
    except (OSError, RuntimeError) as exc:  # at a limit: ChildNotStarted, retried later
        if (limit := limit_reached(exc)) is None:
            raise
        raise not_started(daemon, exc, limit) from exc
    try:
        out, err = await asyncio.wait_for(_answer(proc, read_end, stdin), CHILD_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "lines": [TOOK_TOO_LONG]}
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return unpickled(out, err, proc.returncode, daemon)


async def _spawn(command: Callable[[int], list[str]]) -> tuple[Any, int]:
    """The child started, and the read end of its answer pipe."""
    import asyncio

    read_end, write_end = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(write_end),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(write_end,),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)  # the child's copy stays open: EOF when it ends
    return proc, read_end


async def _answer(proc: Any, fd: int, stdin: bytes) -> tuple[bytes, bytes]:
    """The child's answer (from its pipe ``fd``) and its stderr, once it ended."""
    import asyncio

    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        (_, err), out = await asyncio.gather(proc.communicate(stdin), reader.read())
    finally:
        transport.close()  # closes the pipe
    return out, err
