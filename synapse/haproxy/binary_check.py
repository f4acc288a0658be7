"""Whether an adopted HAProxy master runs the binary ``managed.binary`` names.

A master keeps the binary it was started with: its master-CLI reload re-executes that one
(its own ``argv[0]``), so a ``managed.binary`` changed across a synapse restart would never
run, while synapse picks config features by the new binary's version. An adopted master
running another binary is replaced at the first reload instead (synapse.haproxy.managed).

A ``managed.binary`` that is a script (``#!``: a wrapper setting ulimits or the environment,
then exec'ing HAProxy) is not compared: the master runs what the script execs, never the
script, and a comparison would replace the master at every restart.
"""

from __future__ import annotations

import logging
import os
import shutil

from smartstack.logs import event

log = logging.getLogger("synapse.haproxy.managed")
DELETED = " (deleted)"  # /proc's mark of a binary replaced on disk (a package upgrade)
_said: set[str] = set()  # the scripts said not compared (once each)


def other_binary(master: int, binary: str) -> str | None:
    """The binary ``master`` runs when it is not ``binary`` (resolved on PATH, symlinks
    followed); None: the same, or /proc does not say, or ``binary`` is a script. One
    upgraded in place is the same path: its reload runs the new one already."""
    try:
        running = os.readlink(f"/proc/{master}/exe").removesuffix(DELETED)
    except OSError:
        return None
    configured = os.path.realpath(shutil.which(binary) or binary)
    if _script(configured):
        if configured not in _said:
            _said.add(configured)
            event(log, "haproxy_binary_not_compared", binary=binary, running=running,
                  detail="managed.binary is a script: the master runs what it execs, so a "
                  "change of binary is not seen")  # fmt: skip
        return None
    return None if running == configured else running


def _script(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(2) == b"#!"
    except OSError:
        return False
