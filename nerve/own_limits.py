"""Errors that are nerve's own lack of resources, not news about what it was looking at.

At its open-file limit (RLIMIT_NOFILE, or the host's), out of kernel buffers or memory,
nerve cannot open a check's socket or a maintenance flag file; at its pids limit (a
container's, systemd's TasksMax) it cannot start a thread, and asyncio starts one to wait
for each exec check's command. Out of local ports (EADDRNOTAVAIL: every port of
``net.ipv4.ip_local_port_range`` toward the check's address held, mostly by TIME_WAIT
sockets of earlier checks) it cannot connect. Such a failure says nothing about the service
or the flag: taken as "down" or "unreadable, stay out" it withdrew healthy services whenever
nerve ran short.
"""

from __future__ import annotations

import errno

OWN_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL}
)
# Said with the error in the check's detail (``check_no_verdict``): the kernel's wording
# ("Cannot assign requested address") does not name the port range.
HINTS = {
    errno.EADDRNOTAVAIL: "no free local port toward it: see net.ipv4.ip_local_port_range "
    "and the TIME_WAIT sockets (ss -tan state time-wait)",
}
# threading.Thread.start() at the pids limit (a RuntimeError; CPython's wording)
NO_THREAD = "can't start new thread"


def at_own_limit(exc: BaseException | None) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in OWN_ERRNOS
    return isinstance(exc, RuntimeError) and str(exc).startswith(NO_THREAD)


def own_limit_hint(exc: BaseException | None) -> str | None:
    """What to look at for ``exc`` or the errors it was raised from (up to two), if known."""
    for _ in range(3):
        if exc is None:
            return None
        if isinstance(exc, OSError) and exc.errno in HINTS:
            return HINTS[exc.errno]
        exc = exc.__cause__
    return None
