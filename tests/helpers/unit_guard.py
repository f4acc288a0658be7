"""Refuse sockets and processes for the duration of a block (the unit tier's guard).

Every attempt is recorded as well as refused, so code that swallows the error (a retry loop
catching Exception) is still caught by whoever reads the record.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class UnitTierViolation(RuntimeError):
    """A unit test reached for the network or a process: it belongs in tests/integration."""


_INHERITED = object()


@contextmanager
def refuse_processes_and_sockets() -> Iterator[list[str]]:
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise UnitTierViolation(f"unit tests start no process and open no socket: {what}")

        return refused

    patches: list[tuple[Any, str, Any]] = [
        (socket.socket, "connect", refuse("socket.connect")),
        (socket.socket, "connect_ex", refuse("socket.connect_ex")),
        (socket.socket, "bind", refuse("socket.bind")),
        (subprocess.Popen, "__init__", refuse("subprocess.Popen")),
        (asyncio, "create_subprocess_exec", refuse("asyncio.create_subprocess_exec")),
        (asyncio, "create_subprocess_shell", refuse("asyncio.create_subprocess_shell")),
    ]
    # socket.socket inherits connect/bind from _socket.socket: restore by deleting the shadow.
    saved = [(owner, name, vars(owner).get(name, _INHERITED)) for owner, name, _ in patches]
    for owner, name, replacement in patches:
        setattr(owner, name, replacement)
    try:
        yield attempts
    finally:
        for owner, name, original in saved:
            if original is _INHERITED:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
