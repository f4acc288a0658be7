"""Whether an adopted HAProxy master runs the binary ``managed.binary`` names.

A master keeps the binary it was started with: its master-CLI reload re-executes that one
(its own ``argv[0]``), so a ``managed.binary`` changed across a synapse restart would never
run, while synapse picks config features by the new binary's version. An adopted master
running another binary is replaced at the first reload instead (synapse.haproxy.managed).
"""

from __future__ import annotations

import os
import shutil

DELETED = " (deleted)"  # /proc's mark of a binary replaced on disk (a package upgrade)


def other_binary(master: int, binary: str) -> str | None:
    """The binary ``master`` runs when it is not ``binary`` (resolved on PATH, symlinks
    followed); None: the same, or /proc does not say. One upgraded in place is the same
    path: its reload runs the new one already."""
    try:
        running = os.readlink(f"/proc/{master}/exe").removesuffix(DELETED)
    except OSError:
        return None
    configured = os.path.realpath(shutil.which(binary) or binary)
    return None if running == configured else running
