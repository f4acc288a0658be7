"""A reload by ``reload_command`` (HAProxy its own unit): the new process, told apart from
the old ones answering on the same admin socket.

After the command synapse waits until a new process answers `show info`. Old workers
answer there too for a moment: the one the reload replaces (until its master tells it to
stop, and while it soft-stops) and, right after a reload just before, the one *that* one
replaced, soft-stopping (`Stopping: 1`) while connections it serves stay open. A pid
merely different from the one that answered before the command could be the previous
worker: a CI run confirmed it as the new one, read its backends, and found a backend just
added "not running". So before the command every pid that answers is gathered (asked
again while the answer comes from a stopping process), with the processes of the last
reloads (an old worker its master has not told to stop yet answers `Stopping: 0`), and
the new process is one that answers with a pid not among them and is not stopping.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping

from smartstack.logs import event
from synapse.haproxy.runtime import RuntimeClient
from synapse.haproxy.sockets import HAProxySocketError

log = logging.getLogger("synapse.haproxy")

STOPPING_LOOKS = 5  # asks before the command while a stopping process answers
LOOK_PAUSE = 0.02
REMEMBERED = 8  # processes of past reloads never taken for a new one


def is_new(info: Mapping[str, str], before: Collection[str]) -> bool:
    """Whether `show info` came from a process the reload started."""
    return info.get("Pid") not in before and info.get("Stopping", "0") != "1"


class CommandReload:
    """The processes answering on ``client``'s socket before a reload, and the new one."""

    def __init__(self, client: RuntimeClient | None, clock: Callable[[], float]) -> None:
        self.client, self._clock = client, clock
        self._seen: deque[str] = deque(maxlen=REMEMBERED)  # pids that answered before

    async def _info(self) -> dict[str, str] | None:
        assert self.client is not None
        try:
            return await self.client.info()
        except HAProxySocketError:
            return None

    async def answering(self) -> set[str]:
        """The pids answering now (the live worker's, and any stopping one's met first),
        and those of the last reloads."""
        pids: set[str] = set(self._seen)
        for look in range(STOPPING_LOOKS if self.client is not None else 0):
            if look:
                await asyncio.sleep(LOOK_PAUSE)
            info = await self._info()
            if info is None:
                break
            pids.add(info["Pid"])
            self._remember(info["Pid"])
            if info.get("Stopping", "0") != "1":
                break
        return pids

    def _remember(self, pid: str) -> None:
        if pid not in self._seen:
            self._seen.append(pid)

    async def new_worker(self, before: Collection[str], timeout: float) -> str | None:
        """The new process's pid once it answers (None: no client, or none in ``timeout``)."""
        if self.client is None:
            return None
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            info = await self._info()
            if info is not None and is_new(info, before):
                self._remember(info["Pid"])
                return info["Pid"]
            await asyncio.sleep(LOOK_PAUSE)
        event(log, "haproxy_reload_unconfirmed", level=logging.WARNING,
              detail=f"no new HAProxy process answered on {self.client.path} within "
              f"{timeout}s")  # fmt: skip
        return None
