"""The running synapse never imports pydantic (issue 15: a sidecar's RSS), nor decimal
(through fractions: only zone routing's shares use it, ~0.4 MB).

A real synapse with a managed HAProxy and a real ZooKeeper: its config was validated by a
child process and is held as plain objects (synapse.config_load). Checked from outside,
in /proc/PID/maps (pydantic_core's shared object), through start, SIGHUP (good and bad)
and generator settings read from the registry (validated by a child too).
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from kazoo.client import KazooClient
from synapse_e2e import SYNAPSE, Synapse, register, wait, wait_serving, zk_service

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer


def pydantic_mapped(pid: int) -> bool:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "pydantic" in maps or "_decimal" in maps


def test_the_daemon_runs_reloads_and_refuses_without_pydantic(
    zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    a, b = http_backend_factory("plain-a"), http_backend_factory("plain-b")
    register(writer, "/plain/web", a)
    register(writer, "/plain/api", b)
    web, api = free_port(), free_port()
    with Synapse({"web": zk_service(zk, "/plain/web", web)}) as syn:
        wait_serving(web, {"plain-a"})
        assert syn.status()["config_models"] == "plain"
        assert not pydantic_mapped(syn.process.pid)

        # SIGHUP, a good file: a service added, validated by a child
        syn.config["services"]["api"] = zk_service(zk, "/plain/api", api)
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait_serving(api, {"plain-b"})
        assert syn.status()["config"]["last_reload"]["ok"] is True

        # SIGHUP, a typo: refused with the line `synapse -k` prints, the old config runs on
        syn.config["services"]["api"]["haproxy"]["prot"] = 1
        syn.write_config()
        syn.signal(signal.SIGHUP)
        wait(lambda: syn.metric("synapse_config_reloads_total", result="failed") == 1)
        reload = syn.status()["config"]["last_reload"]
        expected = (
            f"{syn.config_path}: services.api.haproxy.prot: unknown key, did you mean 'port'?"
        )
        assert reload["ok"] is False and reload["error"] == expected
        assert "event=config_reload_failed" in syn.log(60)
        check = subprocess.run([str(SYNAPSE), "-c", str(syn.config_path), "-k", "--config-only"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert check.returncode == 2 and check.stderr.strip() == f"error: {expected}"
        wait_serving(web, {"plain-a"})
        wait_serving(api, {"plain-b"})

        # generator settings in the registry: merged and validated by a child
        writer.set("/plain/web", json.dumps({"haproxy": {"server_options": "maxconn 7"}}).encode())
        wait(lambda: "maxconn 7" in syn.haproxy_config(), what="the znode's server_options")

        # SIGHUP changing web: the settings are checked again by a child; meanwhile web keeps
        # its config, so the first haproxy.cfg with the file's change has the settings too
        del syn.config["services"]["api"]["haproxy"]["prot"]
        syn.config["services"]["web"]["haproxy"]["backend"] = ["balance leastconn"]
        syn.write_config()
        syn.signal(signal.SIGHUP)
        seen: list[str] = []

        def reloaded() -> bool:
            seen.append(syn.haproxy_config())
            return "balance leastconn" in seen[-1]

        wait(reloaded, what="the reloaded file's backend option")
        assert "maxconn 7" in seen[-1]
        writer.set("/plain/web", json.dumps({"haproxy": {"backend_order": "sideways"}}).encode())
        wait(lambda: "event=generator_config_invalid" in syn.log(80), what="refused settings")
        wait_serving(web, {"plain-a"})
        assert syn.process.alive and not pydantic_mapped(syn.process.pid)


def test_a_bad_file_at_start_exits_2_with_the_lines_of_a_check(tmp_path: Path) -> None:
    path = tmp_path / "synapse.yaml"
    path.write_text("services:\n  web:\n    discovery: {method: zookeeper}\n")
    start = subprocess.run([str(SYNAPSE), "-c", str(path)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    check = subprocess.run([str(SYNAPSE), "-c", str(path), "-k", "--config-only"],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert start.returncode == check.returncode == 2
    assert start.stderr == check.stderr and start.stderr.startswith(f"error: {path}: services.web")
