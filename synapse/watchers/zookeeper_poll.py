"""Airbnb's ``zookeeper_poll``: the ``zookeeper`` watcher listing the children every
``polling_interval_sec`` instead of watching them."""

from __future__ import annotations

import asyncio

from synapse.watchers.zookeeper import ZooKeeperWatcher


class ZooKeeperPollWatcher(ZooKeeperWatcher):
    """Airbnb's ``zookeeper_poll``: list the children every ``polling_interval_sec``.

    No watches are set (for ensembles where watches are unwelcome); new children are
    still read once each and cached by name.
    """

    method = "zookeeper_poll"

    def _arm(self) -> None:
        self._poller = self.ctx.loop.create_task(self._poll(), name=f"zk-poll-{self.service}")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.discovery.polling_interval_sec)
            self.count_event()
            self._gen_dirty = self.generator_path is not None
            self._mark()

    async def close(self) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()
        await super().close()
