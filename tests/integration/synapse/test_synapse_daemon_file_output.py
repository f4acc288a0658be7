"""The daemon in-process without HAProxy: file_output from real ZooKeeper, config reloads."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from applier_fakes import FakeApplier
from kazoo.client import KazooClient
from synapse_testlib import eventually

from synapse.config import load_synapse_config
from synapse.daemon import SynapseDaemon
from testbed.zookeeper import ZooKeeperServer


def write_config(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(doc))


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


async def test_file_output_follows_zookeeper_and_config_reloads(zk: ZooKeeperServer, tmp_path):
    out = tmp_path / "services"
    writer = KazooClient(hosts=zk.hosts)
    await asyncio.to_thread(writer.start, 30)
    record = {"host": "127.0.0.1", "port": 8100, "name": "one", "labels": {"az": "1"}}
    writer.create("/fo/web/one_", json.dumps(record).encode(), sequence=True, makepath=True)
    doc = {
        "services": {
            "web": {"discovery": {"method": "zookeeper", "hosts": [zk.hosts], "path": "/fo/web"}},
            "static": {"discovery": {"method": "base"},
                       "default_servers": [{"name": "s", "host": "127.0.0.2", "port": 9}]},
            "quiet": {"discovery": {"method": "base"}, "file_output": {"disabled": True}},
            "cloud": {"discovery": {"method": "ec2tag"},
                      "default_servers": [{"name": "c", "host": "127.0.0.3", "port": 7}]},
        },
        "file_output": {"output_directory": str(out)},
        "admin": {"port": 0},
        "startup_wait": 5,
    }  # fmt: skip
    cfg_path = tmp_path / "synapse.yaml"
    write_config(cfg_path, doc)
    config, _ = load_synapse_config(cfg_path)
    daemon = SynapseDaemon(config, str(cfg_path))
    await daemon.start()
    try:
        web = await eventually(lambda: read_json(out / "web.json"), what="web.json")
        assert web == [{**record}]
        assert read_json(out / "static.json") == [{"host": "127.0.0.2", "name": "s", "port": 9}]
        # An unsupported method: its defaults, and the other services are unaffected.
        assert read_json(out / "cloud.json") == [{"host": "127.0.0.3", "name": "c", "port": 7}]
        assert not (out / "quiet.json").exists()
        status = daemon.status()
        assert "not supported" in status["services"]["cloud"]["watcher"]["error"]

        writer.create("/fo/web/two_", json.dumps({**record, "port": 8101, "name": "two"}).encode(),
                      sequence=True)  # fmt: skip
        await eventually(lambda: len(read_json(out / "web.json") or []) == 2, what="two servers")

        # An invalid file on SIGHUP changes nothing.
        cfg_path.write_text("services: {web: {discovery: {method: nosuch}}}\n")
        assert not await daemon.reload_config()
        assert daemon.last_config_reload and not daemon.last_config_reload["ok"]
        # A valid one: 'static' removed (its file goes), 'web' keeps its watcher.
        web_watcher = daemon.watchers["web"]
        servers = daemon.metrics.registry.get_sample_value
        assert servers("synapse_servers", {"service": "static"}) == 1
        del doc["services"]["static"]
        write_config(cfg_path, doc)
        assert await daemon.reload_config()
        await eventually(lambda: not (out / "static.json").exists(), what="static.json removed")
        assert daemon.watchers["web"] is web_watcher
        # Its label sets go with it: no stale gauge for a service nothing watches.
        assert servers("synapse_servers", {"service": "static"}) is None
        assert servers("synapse_servers", {"service": "web"}) == 2
        assert len(read_json(out / "web.json")) == 2
    finally:
        await daemon.stop()
        await asyncio.to_thread(writer.stop)
        writer.close()


class _Failing:
    """A part whose stop() raises."""

    async def stop(self) -> None:
        raise RuntimeError("stop failed")


async def test_stop_reaches_the_controller_when_another_part_fails(tmp_path):
    """A managed HAProxy outlives synapse unless the controller is stopped: always stop it."""
    path = tmp_path / "synapse.yaml"
    write_config(path, {"services": {"s": {"discovery": {"method": "base"}}}})
    config, _ = load_synapse_config(path)
    daemon = SynapseDaemon(config, str(path))
    await daemon.start()
    controller = FakeApplier()
    daemon.controller = controller
    daemon.watchers["s"] = _Failing()  # type: ignore[assignment]
    await daemon.stop()
    assert controller.stopped
