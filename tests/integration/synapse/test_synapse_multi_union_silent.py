"""A ``multi`` union started while one child's registry is down, against a real ZooKeeper:
the state file's servers of the silent registry stay until it answers (Report.partial)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from applier_fakes import FakeApplier, eventually, make_reconciler
from kazoo.client import KazooClient

from smartstack.tasks import cancel_and_wait
from smartstack.zookeeper import ZooKeeperPool
from synapse.config import SynapseConfig
from synapse.watchers import create_watcher
from synapse.watchers.base import WatcherContext
from testbed.process import free_port


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def forwarding(port: int, target: str) -> AsyncIterator[None]:
    """The "registry B" comes up: 127.0.0.1:``port`` forwards to ZooKeeper ``target``."""
    host, target_port = target.rsplit(":", 1)
    pipes: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(target_port))
        for task in (_pipe(reader, up_writer), _pipe(up_reader, writer)):
            pipes.add(asyncio.create_task(task))

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for task in pipes:
            await cancel_and_wait(task)


def record(host: str, name: str) -> dict:
    return {"timestamp": int(time.time()), "host": host, "port": 80, "name": name}


async def test_a_silent_registrys_servers_stay_until_it_answers(
    zk, writer: KazooClient, tmp_path: Path
) -> None:
    writer.create("/silent/a/a_", json.dumps(record("10.0.0.1", "a")).encode(),
                  sequence=True, makepath=True)  # fmt: skip
    writer.ensure_path("/silent/b")  # registry B's path, once B answers: empty
    b_port = free_port()  # registry B: nothing listens yet
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"web": {
        "a_10.0.0.1:80": record("10.0.0.1", "a"), "b_10.0.0.2:80": record("10.0.0.2", "b"),
    }}))  # fmt: skip
    union = {"method": "multi", "resolver": {"method": "union"}, "watchers": {
        "a": {"method": "zookeeper", "hosts": [zk.hosts], "path": "/silent/a"},
        "b": {"method": "zookeeper", "hosts": [f"127.0.0.1:{b_port}"], "path": "/silent/b"},
    }}  # fmt: skip
    cfg = SynapseConfig.model_validate({
        "services": {"web": {"discovery": union, "haproxy": {"port": 3300}}},
        "haproxy": {"config_file_path": str(tmp_path / "h.cfg"), "reload_command": "true",
                    "state_file_path": str(state)},
    })  # fmt: skip
    applier = FakeApplier()
    rec = make_reconciler(cfg, applier)
    loop = asyncio.get_running_loop()
    pool = ZooKeeperPool(loop)
    ctx = WatcherContext(loop=loop, metrics=rec.metrics, zk_pool=pool, zk_session_timeout=4)
    watcher = create_watcher("web", cfg.services["web"], rec.report, ctx)
    task = loop.create_task(rec.run())
    try:
        await watcher.start()
        await eventually(lambda: rec.service_status()["web"]["origin"] == "discovery",
                         what="A's report selected")  # fmt: skip
        await eventually(lambda: applier.applied, what="a hand-over")
        await asyncio.sleep(1.0)  # B still down: its server stays (before: gone at once)
        handed = [applier.hosts("web", i) for i in range(len(applier.applied))]
        assert all(hosts == ["10.0.0.1", "10.0.0.2"] for hosts in handed), handed
        async with forwarding(b_port, zk.hosts):  # B answers: nothing under its path
            await eventually(lambda: applier.hosts("web") == ["10.0.0.1"], 20, "b's server gone")
    finally:
        await watcher.stop()
        await cancel_and_wait(task)
        await pool.close_all()
