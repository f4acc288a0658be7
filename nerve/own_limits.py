"""Errors that are nerve's own lack of resources, not news about what it was looking at.

At its open-file limit (RLIMIT_NOFILE, or the host's), out of kernel buffers or memory,
nerve cannot open a check's socket or a maintenance flag file. Such a failure says nothing
about the service or the flag: taken as "down" or "unreadable, stay out" it withdrew
healthy services whenever nerve ran short.
"""

from __future__ import annotations

import errno

OWN_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def at_own_limit(exc: BaseException | None) -> bool:
    return isinstance(exc, OSError) and exc.errno in OWN_ERRNOS
