"""Whether HAProxy runs the config file: the one window where it may not, marked on disk.

The installer makes a candidate the config file before HAProxy loads it (HAProxy reads
the file). If synapse dies in between (kill -9, OOM, a stop that cancelled the reload),
the file says the candidate while HAProxy still runs the config before it, and the next
synapse, which plans against the file, would never reload for what the candidate changed
(a frontend's new port, say). So beside the config file, ``<config>.loaded`` says:

- ``installing``: written (atomically, fsynced) before the candidate reaches the file;
- ``loaded``: written once HAProxy was confirmed to run the file (a start, a reload).

At start, ``installing``, or no marker beside an existing config file (a synapse from
before the marker: an upgrade costs one reload), means the running config is unknown:
the first apply reloads (validated) whatever its plan says (``with_reload``).

Not a digest of the loaded text: the file also changes without a reload, whenever runtime
commands changed servers (it stays equal to what HAProxy runs), so a digest would have to
follow every such write (a second fsync each) or leave out what runtime commands may
change (the planner's rules, twice). The install window is the only time the file is ahead.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from smartstack.logs import event
from synapse.atomic import read_text, write_atomic
from synapse.haproxy.ops import Plan, Reload

log = logging.getLogger("synapse.haproxy")

INSTALLING, LOADED = "installing\n", "loaded\n"
REASON = "HAProxy may not run the config file (synapse stopped between writing it and the reload)"


class LoadMark:
    def __init__(self, config_path: Path) -> None:
        self.path = config_path.with_name(config_path.name + ".loaded")
        self.unknown = False  # HAProxy may run something else than the file: reload once
        self._on_disk: str | None = None

    async def load(self, file_exists: bool) -> None:
        self._on_disk = await asyncio.to_thread(read_text, self.path)
        self.unknown = file_exists and self._on_disk != LOADED
        if self.unknown:
            found = "no marker" if self._on_disk is None else self._on_disk.strip()[:40]
            event(log, "haproxy_config_unconfirmed", level=logging.WARNING,
                  marker=str(self.path), found=found,
                  detail="an adopted HAProxy may not run the config file: the first "
                  "apply reloads it")  # fmt: skip

    async def installing(self) -> None:
        """Before the candidate reaches the file (OSError when it cannot be written)."""
        await self._write(INSTALLING)

    async def loaded(self) -> None:
        """HAProxy was confirmed to run the file."""
        self.unknown = False
        try:
            await self._write(LOADED)
        except OSError as err:  # the next synapse reloads once: logged, not fatal
            event(log, "haproxy_load_mark_failed", level=logging.WARNING,
                  path=str(self.path), error=str(err))  # fmt: skip

    def with_reload(self, plan: Plan) -> Plan:
        """``plan``, with a reload while the running config is unknown."""
        if not self.unknown:
            return plan
        reasons = (plan.reload.reasons if plan.reload else ()) + (("config", REASON),)
        return Plan(plan.ops, Reload(reasons), plan.active)

    async def _write(self, text: str) -> None:
        if self._on_disk != text:
            await asyncio.to_thread(write_atomic, self.path, text)
            self._on_disk = text
