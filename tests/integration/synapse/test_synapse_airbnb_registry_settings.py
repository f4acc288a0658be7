"""issue 11 end to end, synapse side, with a real ZooKeeper and real HAProxy:

- generator settings in the discovery znode's data reach haproxy.cfg (under the file's);
- the state file keeps servers that left (marked) and those settings, so a synapse
  restarted while ZooKeeper is down serves the current servers with them;
- an Airbnb-shaped config with ``leader_election``, ``haproxy.server_port_override``,
  ``discovery_multi`` and a ``multi`` union, nerve-format records: haproxy.cfg passes
  ``haproxy -c``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from kazoo.client import KazooClient
from synapse_e2e import Synapse, register, wait, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def server_lines(config: str) -> list[str]:
    return [line.strip() for line in config.splitlines() if line.strip().startswith("server ")]


def haproxy_check(cfg: Path) -> None:
    check = subprocess.run([shutil.which("haproxy") or "haproxy", "-c", "-f", str(cfg)],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_znode_settings_and_state_file_survive_a_restart_during_an_outage(
    tmp_path: Path, http_backend_factory
) -> None:
    a, b = http_backend_factory("gen-a"), http_backend_factory("gen-b")
    server = ZooKeeperServer(workdir=tmp_path / "zk").start()
    writer = KazooClient(hosts=server.hosts)
    writer.start(timeout=30)
    path = "/gen/web"
    settings = {"haproxy": {"server_options": "maxconn 17", "port": 1}, "statsd": {}}
    writer.create(path, json.dumps(settings).encode(), makepath=True)
    state_file = tmp_path / "state.json"
    port = free_port()
    services = {"web": {
        "discovery": {"method": "zookeeper", "hosts": [server.hosts], "path": path},
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }}  # fmt: skip
    haproxy = {"state_file_path": str(state_file)}
    try:
        register(writer, path, a)
        gone = register(writer, path, b)
        with Synapse(services, haproxy=haproxy) as syn:
            wait_serving(port, {"gen-a", "gen-b"})  # the file's port wins over the znode's

            def with_settings() -> bool:
                lines = server_lines(syn.haproxy_config())
                return len(lines) == 2 and all("maxconn 17" in line for line in lines)

            wait(with_settings, what="the znode's settings on both servers")
            # changed in the registry while running: HAProxy's config follows
            settings["haproxy"]["server_options"] = "maxconn 23"
            writer.set(path, json.dumps(settings).encode())
            wait(lambda: all("maxconn 23" in line for line in server_lines(syn.haproxy_config())),
                 what="the changed znode settings")  # fmt: skip
            wait_serving(port, {"gen-a", "gen-b"})
            haproxy_check(syn.dir / "haproxy.cfg")
            writer.delete(gone)
            wait_serving(port, {"gen-a"})

            def state() -> dict:
                return json.loads(state_file.read_text()) if state_file.exists() else {}

            wait(lambda: any(e.get("left") for k, e in state().get("web", {}).items()
                             if k.startswith("gen-b")), what="gen-b kept as left")  # fmt: skip
            web = state()["web"]
            assert web["watcher_config_for_generator"] == {"haproxy": settings["haproxy"]}
            assert not web[f"gen-a_{a.address}"].get("left")
        writer.stop()
        server.stop()
        # ZooKeeper down from the start: servers and settings come from the state file.
        with Synapse(services, haproxy=haproxy, startup_wait=0.5) as syn:
            wait_serving(port, {"gen-a"})
            lines = server_lines(syn.haproxy_config())
            assert len(lines) == 1 and "maxconn 23" in lines[0], lines
            assert syn.status()["services"]["web"]["origin"] == "state_file"
            haproxy_check(syn.dir / "haproxy.cfg")
    finally:
        writer.close()
        server.stop()


def test_airbnb_leader_port_override_and_multi_pass_haproxy_check(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    first, second, other = (http_backend_factory(n) for n in ("lead-1", "lead-2", "other"))
    register(writer, "/airbnb11/leader", first)
    register(writer, "/airbnb11/leader", second)
    register(writer, "/airbnb11/override", first, name="google")
    writer.ensure_path("/airbnb11/empty")
    register(writer, "/airbnb11/fallback", other)
    leader_port, override_port, multi_port = free_port(), free_port(), free_port()

    def zk_block(path: str) -> dict:
        return {"method": "zookeeper", "hosts": [zk.hosts], "path": path}

    services = {
        "leader": {"discovery": zk_block("/airbnb11/leader"), "leader_election": True,
                   "haproxy": {"port": leader_port, "bind_address": "127.0.0.1"}},
        "override": {"discovery": zk_block("/airbnb11/override"),
                     "haproxy": {"port": override_port, "bind_address": "127.0.0.1",
                                 "server_port_override": second.port,
                                 "backend": ["cookie SRV insert indirect nocache"]}},
        "multi": {"discovery": zk_block("/airbnb11/empty"),
                  "discovery_multi": {
                      "resolver": {"method": "sequential",
                                   "sequential_order": ["primary", "fallback"]},
                      "watchers": {"fallback": zk_block("/airbnb11/fallback")}},
                  "haproxy": {"port": multi_port, "bind_address": "127.0.0.1"}},
    }  # fmt: skip
    with Synapse(services) as syn:
        wait_serving(leader_port, {"lead-1"})  # the lowest sequence only
        # the record points at lead-1's port; the override sends it to lead-2's, by name too
        wait_serving(override_port, {"lead-2"})
        wait_serving(multi_port, {"other"})  # primary empty: the fallback's servers
        config = syn.haproxy_config()
        name = f"google_127.0.0.1:{second.port}"
        assert f"server {name} 127.0.0.1:{second.port}" in config
        assert f"cookie {name}" in config and f"127.0.0.1:{first.port} cookie" not in config
        assert syn.status()["services"]["multi"]["watcher"]["chosen"] == "fallback"
        haproxy_check(syn.dir / "haproxy.cfg")
