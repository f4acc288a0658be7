"""Edge: a service a SIGHUP adds that takes a host another service routed is handed over
at once, empty, not held out until its first report: held out, the host was nobody's
route and answered 404 until then (the route stays on the old service while the new one
has no servers: synapse.haproxy.route_sync.held)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from applier_fakes import FakeApplier, eventually, make_reconciler, report, running

from synapse.config import SynapseConfig


def routed(path: str, hosts: list[str]) -> dict[str, Any]:
    return {"discovery": {"method": "zookeeper", "hosts": ["h:1"], "path": path},
            "haproxy": {"routes": {"hosts": hosts}}}  # fmt: skip


def config(tmp_path: Path, **services: Any) -> SynapseConfig:
    return SynapseConfig.model_validate({
        "services": services,
        "haproxy": {
            "config_file_path": str(tmp_path / "haproxy.cfg"),
            "reload_command": "true",
            "shared_frontend": ["bind 127.0.0.1:8080", "mode http"],
        },
        "startup_wait": 30.0,
    })  # fmt: skip


async def test_a_new_service_taking_a_routed_host_comes_at_once(tmp_path: Path) -> None:
    applier = FakeApplier()
    rec = make_reconciler(config(tmp_path, shop=routed("/shop", ["shop.test"])), applier)
    async with running(rec, applier, report("shop", "10.0.0.1")):
        rec.set_config(
            config(
                tmp_path,
                shop=routed("/shop", ["old.shop.test"]),
                shop2=routed("/shop2", ["shop.test"]),  # takes shop's host
                news=routed("/news", ["news.test"]),  # a new host: waits for its report
            )
        )
        await eventually(lambda: len(applier.applied) == 2, what="the SIGHUP's hand-over")
        handed = {d.name: d.servers for d in applier.applied[-1]}
        assert handed.keys() == {"shop", "shop2"} and handed["shop2"] == []
