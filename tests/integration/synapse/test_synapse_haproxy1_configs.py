"""issue 11 item 6 end to end: synapse configs of the HAProxy 1.x era (our own files, of
the shapes found in public Chef/Puppet/Docker repositories), nerve records in a real
ZooKeeper: synapse rewrites what has a one-to-one modern form, writes a haproxy.cfg that
passes the real ``haproxy -c``, and serves; what has none is refused by ``-k`` naming the
file, the service, the line and the replacement.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml
from kazoo.client import KazooClient
from synapse_e2e import SYNAPSE, Synapse, nerve_record, wait_serving

from testbed.process import free_port
from testbed.zookeeper import ZooKeeperServer

OLD_DEFAULTS = [
    "mode http",
    "contimeout 1000",
    "clitimeout 5000",
    "srvtimeout 5000",
    "option forceclose",
    "redispatch",
    "balance roundrobin",
]


def _chef_role(stats: int, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # a cookbook's synapse.conf.json: stats section with its address, forceclose
    service = {"haproxy": {"port": port, "server_options": "check inter 2s rise 3 fall 2",
                           "listen": ["mode http", "option httpchk GET /health"]}}  # fmt: skip
    top = {"defaults": OLD_DEFAULTS,
           "extra_sections": {f"listen stats 127.0.0.1:{stats}": [
               "mode http", "stats enable", "stats uri /", "stats refresh 5s"]}}  # fmt: skip
    return service, top


def _header_rewriting(stats: int, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # a Docker image's config: headers added and removed the 1.4 way
    service = {"haproxy": {"port": port, "listen": [
        "mode http",
        r"reqadd X-Forwarded-Proto:\ http",
        "reqidel ^X-Forwarded-For:.*",
        r"rspadd X-Served-By:\ synapse",
        "rspidel ^Server:.*",
        "option forwardfor",
    ]}}  # fmt: skip
    top = {"extra_sections": {f"listen stats :{stats}": ["mode http", "stats enable"]}}
    return service, top


def _block_and_frontend(stats: int, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # a Puppet module's: `block`, a frontend extra section with its address
    service = {"haproxy": {"port": port,
                           "frontend": ["block if { hdr_cnt(X-Evil) gt 0 }"],
                           "backend": ["option forceclose"]}}  # fmt: skip
    top = {"extra_sections": {
        f"frontend status 127.0.0.1:{stats}": ["mode http", "monitor-uri /ping"]}}  # fmt: skip
    return service, top


def _early_list_format(stats: int, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    # the early list format with listen lines of its time
    service = {"listen": ["mode http", "contimeout 1000", r"reqadd X-Via:\ old\ synapse"],
               "local_port": port}  # fmt: skip
    stats_section = {f"listen stats :{stats}": ["mode http", "stats uri /admin"]}
    top = {"global": ["maxconn 256", "nbproc 1"], "extra_sections": stats_section}
    return service, top


SHAPES = {
    "chef_role": _chef_role,
    "header_rewriting": _header_rewriting,
    "block_and_frontend": _block_and_frontend,
    "early_list_format": _early_list_format,
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_haproxy1_config_is_rewritten_and_passes_haproxy_check(
    shape: str, zk: ZooKeeperServer, writer: KazooClient, http_backend_factory
) -> None:
    backend = http_backend_factory(f"old-{shape}")
    path = f"/haproxy1/{shape}"
    writer.create(f"{path}/{shape}_", nerve_record(backend), sequence=True, makepath=True)
    stats, port = free_port(), free_port()
    service, top = SHAPES[shape](stats, port)
    service["discovery"] = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    service.setdefault("haproxy", {})["bind_address"] = "127.0.0.1"
    if shape == "early_list_format":
        services: Any = [{"name": "old", **service}]
    else:
        services = {"old": service}
    with Synapse(services, haproxy=top) as syn:
        wait_serving(port, {f"old-{shape}"})
        config = syn.haproxy_config()
        assert f":{stats}\n" in config.replace(f"127.0.0.1:{stats}", f":{stats}")
        assert f"stats :{stats}" not in config and f"status 127.0.0.1:{stats}" not in config
        for gone in ("reqadd", "reqidel", "rspadd", "rspidel", "forceclose", "contimeout",
                     "nbproc", "\tblock ", "\tredispatch"):  # fmt: skip
            assert gone not in config, gone
        check = subprocess.run(
            [shutil.which("haproxy") or "haproxy", "-c", "-f", str(syn.dir / "haproxy.cfg")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "rewritten as" in syn.log(400)


def test_removed_directive_without_modern_twin_is_refused_by_check(tmp_path) -> None:
    config = {
        "services": {"web": {
            "discovery": {"method": "zookeeper", "hosts": ["127.0.0.1:2181"], "path": "/w"},
            "haproxy": {"port": 3300, "listen": ["mode http", r"reqirep ^Host:\ a Host:\ b"]},
        }},
        "haproxy": {"do_reloads": False, "config_file_path": str(tmp_path / "h.cfg")},
    }  # fmt: skip
    path = tmp_path / "synapse.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([str(SYNAPSE), "-c", str(path), "-k"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{path}: services.web.haproxy.listen[1]: 'reqirep" in result.stderr
    assert "HAProxy 2.x removed 'reqirep'; use 'http-request replace-header" in result.stderr
