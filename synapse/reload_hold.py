"""What a synapse reload would take away, for smartstack.reload_settle: a reload that
removes a service or shortens its ``default_servers`` / static ``servers`` list, read from
a file changed a moment ago, waits for the file to be still first (a ``>`` then ``>>``
rewrite read between the two writes is a prefix: review s32, 496 of 562 requests failed)."""

from __future__ import annotations

import logging
from pathlib import Path

from smartstack.reload_settle import hold_removal
from synapse.config import SynapseConfig

log = logging.getLogger("synapse.daemon")


def removals(old: SynapseConfig, new: SynapseConfig) -> list[str]:
    """Services gone from ``new``, then those whose servers given in the file are fewer
    (``name (servers)``)."""
    gone = sorted(old.services.keys() - new.services.keys())
    for name in sorted(old.services.keys() & new.services.keys()):
        was, now = old.services[name], new.services[name]
        if was is now:  # (kept by identity: unchanged)
            continue
        fewer = len(now.default_servers) < len(was.default_servers)
        if fewer or len(now.discovery.servers or ()) < len(was.discovery.servers or ()):
            gone.append(f"{name} (servers)")
    return gone


async def hold_if_removing(old: SynapseConfig, new: SynapseConfig, path: str) -> bool:
    """True when the reload waited for its file: read it again (smartstack.reload_settle)."""
    conf_dirs = (old.service_conf_dir, new.service_conf_dir)
    return await hold_removal(Path(path), conf_dirs, removals(old, new), log)
