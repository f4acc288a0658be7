"""Talking to HAProxy's unix sockets: one command per connection, or a batch in prompt mode.

Commands go in batches: one connection in interactive mode (``prompt``), every command
of a batch written at once, and each answer read up to the prompt that follows it. In
that mode HAProxy 2.6 ends every answer with "\n> ", so answers split reliably and a
failed command is attributed to itself. The plain `;`-separated form does not: there an
answer is followed by one newline, but some answers (`del server`'s "No such server.")
have no newline of their own, so two answers run together. Measured on 2.6.12: one
command per connection ~0.09 ms; a batch ~0.005 ms per command after ~0.1 ms to connect.
(Answers never contain "\n> " for the commands synapse sends: server and backend names
cannot hold '>', and state dumps and error messages do not start a line with it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # `show servers state` of a very large edge is a few MB
PROGRESS_CAP = 12  # timeouts a batch whose answers keep arriving may take in all


class HAProxySocketError(Exception):
    """Base of the errors talking to an HAProxy socket."""


class SocketUnavailable(HAProxySocketError):
    """Could not connect, or no answer in time: HAProxy is down, reloading, or the path is wrong."""


class NoAnswer(SocketUnavailable):
    """Connected, but the answer did not come (the timeout, or the connection closed):
    HAProxy may be stalled (``slow_socket``), which a command's failure says by type
    (``Unanswered``), not by its wording."""


class Unanswered(str):
    """The failure text of a runtime command that got no answer (``NoAnswer``, a batch
    cut short): ``SlowSocket.commands_failed`` tells a stalled HAProxy by this type."""


class CommandFailed(HAProxySocketError):
    """HAProxy answered a command with an error."""

    def __init__(self, command: str, answer: str) -> None:
        super().__init__(f"{command!r} failed: {answer.strip()[:300] or '(empty answer)'}")
        self.command = command
        self.answer = answer


class UnexpectedAnswer(HAProxySocketError):
    """An answer we cannot parse (another HAProxy version, or not HAProxy at all)."""


PROMPT = b"\n> "  # what follows every answer in interactive mode


def split_answers(
    buffer: bytes | bytearray, limit: int, scan_from: int = 0
) -> tuple[list[str], int]:
    """The complete answers at the head of an interactive-mode transcript, at most ``limit``.

    Each answer ends where a prompt starts. Returns the answers and how many bytes they
    took (with their prompts); the rest is an answer still arriving. ``scan_from``: no
    prompt starts before this offset (it was searched already).
    """
    answers: list[str] = []
    start = 0
    while len(answers) < limit:
        end = buffer.find(PROMPT, max(start, scan_from))
        if end < 0:
            break
        answers.append(bytes(buffer[start:end]).decode(errors="replace"))
        start = end + len(PROMPT)
    return answers, start


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection; SocketUnavailable from the OSError when none (EAGAIN: the listen queue
    is full, HAProxy accepts nothing: stalled, not gone; asyncio's own connect reported
    such a connection made and its first write failed, which looked like a closed socket)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        code = sock.connect_ex(path)  # (a unix connect completes at once, or fails)
        if code:
            raise OSError(code, os.strerror(code))
        return await asyncio.open_unix_connection(sock=sock, limit=MAX_ANSWER_BYTES)
    except OSError as err:
        sock.close()
        raise SocketUnavailable(f"{path}: {err.strerror or err}") from err


class Session:
    """One admin-socket connection in interactive mode; ``ask`` sends a batch of commands.

    Use as ``async with Session(path, timeout) as session``; each ``ask`` is bounded by the
    timeout. A batch cut short (HAProxy gone, timeout) returns the answers that came.
    """

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = bytearray()
        self.closed = False
        self._prompted = False  # `prompt` is sent with the first batch (one round trip less)
        self.timed_out = False  # a batch ended at the timeout: HAProxy may still run it
        self.answered_at = 0.0  # (time.monotonic) when an answer last came

    async def __aenter__(self) -> Session:
        self._reader, self._writer = await _open(self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def ask(self, commands: Sequence[str]) -> list[str]:
        """Send ``commands`` at once; their answers in order (fewer if the batch was cut).

        The first batch of a connection starts with `prompt` (interactive mode), written
        together with the commands: HAProxy reads its input line by line, so they follow
        in that mode. Its answer must be empty (else UnexpectedAnswer; none at all:
        SocketUnavailable), and it is not returned.
        """
        if not commands:
            return []
        if self._reader is None or self._writer is None or self.closed:
            raise SocketUnavailable(f"{self.path}: the session is closed")
        for command in commands:
            if "\n" in command or "\r" in command:
                raise ValueError(f"a command must be one line: {command!r}")
        if self._prompted:
            return await self._exchange(commands)
        self._prompted = True
        answers = await self._exchange(["prompt", *commands])
        if not answers or answers[0] != "":
            await self.close()
            if not answers:
                raise NoAnswer(f"{self.path}: no answer to 'prompt'")
            raise UnexpectedAnswer(f"{self.path}: 'prompt' answered {answers[0][:120]!r}")
        return answers[1:]

    async def _exchange(self, commands: Sequence[str]) -> list[str]:
        answers: list[str] = []
        scan = 0
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        # The timeout aborts the connection (the read then ends at once) rather than
        # cancelling this task: one timer, a third of `asyncio.timeout`'s cost, on every
        # change's path (issue 15, fleet CPU per write). It bounds a silence, not the
        # batch: an answer still arriving gets another period (a 20,000-server state dump
        # from a HAProxy at 0.6 % CPU took 9-13 s: cut at 5 s, it was taken for a dead
        # socket and HAProxy reloaded), up to PROGRESS_CAP periods in all.
        loop = asyncio.get_running_loop()
        received, periods = 0, 1

        def expire(seen: int) -> None:
            nonlocal timer, periods
            if received > seen and periods < PROGRESS_CAP:
                periods += 1
                timer = loop.call_later(self.timeout, expire, received)
            else:
                self.timed_out = True
                writer.transport.abort()

        timer = loop.call_later(self.timeout, expire, 0)
        try:
            writer.write("".join(f"{c}\n" for c in commands).encode())
            while True:
                found, used = split_answers(self._buffer, len(commands) - len(answers), scan)
                del self._buffer[:used]
                answers += found
                if len(answers) == len(commands):
                    break
                scan = max(0, len(self._buffer) - len(PROMPT) + 1)
                chunk = await reader.read(MAX_ANSWER_BYTES)
                if not chunk:
                    break
                self._buffer += chunk
                received += len(chunk)
        except OSError:
            pass  # the caller sees the missing answers
        finally:
            timer.cancel()
        if answers:
            self.answered_at = time.monotonic()
        if len(answers) < len(commands) or writer.transport.is_closing():
            # Late answers would be taken for the next batch's, and a connection the timer
            # aborted as the last answer came in is dead: never use either again.
            await self.close()
        return answers


async def unix_request(
    path: str, command: str, timeout: float = DEFAULT_TIMEOUT, shut_write: bool = False
) -> str:
    """Send one command line to a unix socket and read the answer until HAProxy closes."""
    if "\n" in command or "\r" in command:
        raise ValueError(f"a command must be one line: {command!r}")
    loop = asyncio.get_running_loop()
    cap = loop.time() + timeout * PROGRESS_CAP  # (as a batch: a silence ends it, not a size)
    try:
        async with asyncio.timeout(timeout) as deadline:
            reader, writer = await _open(path)
            try:
                writer.write(command.encode() + b"\n")
                if shut_write:
                    writer.write_eof()
                await writer.drain()
                parts = [await reader.read(MAX_ANSWER_BYTES)]
                deadline.reschedule(min(cap, loop.time() + timeout))
                while chunk := await reader.read(MAX_ANSWER_BYTES):
                    parts.append(chunk)  # (joined once: `+=` copied 1.9 MB answers ~30 times)
                    deadline.reschedule(min(cap, loop.time() + timeout))
                data = b"".join(parts)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError as err:
        raise NoAnswer(f"{path}: no answer to {command!r} within {timeout}s") from err
    except OSError as err:  # the connection broke after it was opened
        raise SocketUnavailable(f"{path}: {err.strerror or err}") from err
    return data.decode(errors="replace")
