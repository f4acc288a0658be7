"""Docker mode: a container's maintenance flag belongs to that container (its id).

`nerve maint web@app1:80` saves the flag under the service's name with the container's id
(MaintenanceStore.bind, by DockerSource when the container's service is added). The same
container started again (`docker restart`, stop and start: the same id) keeps it. A container
that is destroyed loses it: at its `destroy` event, or, when nerve did not see that event (it
was down, or the event is older than dockerd's buffer), at a resync (the first one at nerve's
start), which asks dockerd about each flagged container that is not running. A new container
under the same name (a recreated compose service, a rolling redeploy) starts without it in any
case: the store drops a flag that names another container.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Collection

from nerve.maintenance import MaintenanceStore
from smartstack.tasks import cancel_and_wait

log = logging.getLogger("nerve.docker")

REMOVED = "container removed"
INSPECT_TIMEOUT = 5.0  # seconds per dockerd call; a hung dockerd drops nothing


class ContainerFlags:
    def __init__(self, store: MaintenanceStore, base_url: str) -> None:
        self.store = store
        self.base_url = base_url
        self._task: asyncio.Task[None] | None = None

    def gone(self, container_id: str) -> None:
        """The container was destroyed (the watch's destroy event)."""
        self.store.drop_container(container_id, REMOVED)

    def resynced(self, present: Collection[str]) -> None:
        """After a full listing (``present``: the containers listed): the flags of the others
        are checked with dockerd, in the background; one check at a time."""
        absent = {c for c in self.store.containers().values() if c not in present}
        if absent and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._prune(absent))

    async def _prune(self, candidates: set[str]) -> None:
        answer: concurrent.futures.Future[set[str]] = concurrent.futures.Future()

        def ask() -> None:
            try:
                answer.set_result(self._missing(candidates))
            except Exception as exc:
                answer.set_exception(exc)

        # A daemon thread, not the loop's executor: asyncio.run() waits for executor threads
        # at exit, and a hung dockerd must not hold nerve's shutdown.
        threading.Thread(target=ask, name="docker-flags", daemon=True).start()
        try:
            missing = await asyncio.wrap_future(answer)
        except Exception as exc:  # dockerd unreachable: nothing is dropped, next resync again
            log.debug("could not ask dockerd about flagged containers: %s", exc)
            return
        for container_id in missing:
            self.store.drop_container(container_id, REMOVED)

    def _missing(self, candidates: set[str]) -> set[str]:
        """(thread) Those of ``candidates`` dockerd does not know (any other answer keeps)."""
        import docker.errors

        client = docker.DockerClient(base_url=self.base_url, version="auto",
                                     timeout=INSPECT_TIMEOUT)  # fmt: skip
        try:
            missing = set()
            for container_id in candidates:
                try:
                    client.api.inspect_container(container_id)
                except docker.errors.NotFound:
                    missing.add(container_id)
            return missing
        finally:
            client.close()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)  # (its thread ends by itself, INSPECT_TIMEOUT per call)
