"""A SIGHUP that brings a route collision is refused like any invalid config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from synapse.config import load_synapse_config
from synapse.daemon import SynapseDaemon


def _doc(directory: Path, **routes: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "services": {
            name: {"discovery": {"method": "base"}, "haproxy": {"routes": r}}
            for name, r in routes.items()
        },
        # synapse writes nothing and runs no HAProxy: only the config handling is under test
        "haproxy": {"do_writes": False, "do_reloads": False, "do_socket": False,
                    "config_file_path": str(directory / "haproxy.cfg"),
                    "shared_frontend": ["bind 127.0.0.1:8080", "mode http"]},
        "file_output": {"output_directory": str(directory / "out")},
        "admin": {"port": 0},
        "startup_wait": 0,
    }  # fmt: skip


async def test_sighup_with_a_route_collision_keeps_the_running_config(tmp_path):
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(_doc(tmp_path, shop={"hosts": ["a.com"]})))
    config, _ = load_synapse_config(path)
    daemon = SynapseDaemon(config, str(path))
    await daemon.start()
    try:
        bad = _doc(tmp_path, shop={"hosts": ["a.com"]}, shop2={"hosts": ["a.com"]})
        path.write_text(yaml.safe_dump(bad))
        assert not await daemon.reload_config()
        report = daemon.last_config_reload
        assert report is not None and not report["ok"]
        assert "'shop' and 'shop2'" in str(report)
        assert set(daemon.watchers) == {"shop"}
    finally:
        await daemon.stop()
