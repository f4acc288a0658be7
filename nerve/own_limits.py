"""Errors that are nerve's own lack of resources, not news about what it was looking at.

At its open-file limit (RLIMIT_NOFILE, or the host's), out of kernel buffers or memory,
nerve cannot open a check's socket or a maintenance flag file; at its pids limit (a
container's, systemd's TasksMax) it cannot start a thread, and asyncio starts one to wait
for each exec check's command. Such a failure says nothing about the service or the flag:
taken as "down" or "unreadable, stay out" it withdrew healthy services whenever nerve ran
short.
"""

from __future__ import annotations

import errno

OWN_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# threading.Thread.start() at the pids limit (a RuntimeError; CPython's wording)
NO_THREAD = "can't start new thread"


def at_own_limit(exc: BaseException | None) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in OWN_ERRNOS
    return isinstance(exc, RuntimeError) and str(exc).startswith(NO_THREAD)
