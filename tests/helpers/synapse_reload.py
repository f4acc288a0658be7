"""Helpers of synapse's SIGHUP and restart tests: web's service blocks, a reload of web, a
refused reload, the log from a mark on, and a departure clients have seen."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kazoo.client import KazooClient
from synapse_e2e import Synapse, http_get, nerve_record, wait

from testbed.process import free_port, wait_until
from testbed.zookeeper import ZooKeeperServer


def web(discovery: dict[str, Any], port: int) -> dict[str, Any]:
    """The services of a synapse with the one service ``web`` on 127.0.0.1:``port``."""
    return {"web": {"discovery": discovery, "haproxy": {"port": port, "bind_address": "127.0.0.1"}}}


def static_service(backend: Any, port: int) -> dict[str, Any]:
    """A service with one default server, ``backend`` (no registry), on 127.0.0.1:``port``."""
    return {
        "discovery": {"method": "base"},
        "default_servers": [{"name": backend.name, "host": "127.0.0.1", "port": backend.port}],
        "haproxy": {"port": port, "bind_address": "127.0.0.1"},
    }


def refused_sighup(syn: Synapse, timeout: float = 30) -> str:
    """Write ``syn.config``, SIGHUP; once synapse refused that reload, its error (the running
    config stays)."""
    syn.write_config()
    syn.signal(signal.SIGHUP)
    wait(lambda: (syn.status()["config"]["last_reload"] or {}).get("ok") is False, timeout)
    return syn.status()["config"]["last_reload"]["error"]


def zk_web(hosts: str, port: int, path: str, zone: str | None = None) -> dict[str, Any]:
    """web's block: ZooKeeper at ``path`` (only the records labelled ``zone``, if given),
    use_previous_backends false (an empty list empties it), on 127.0.0.1:``port``."""
    discovery: dict[str, Any] = {"method": "zookeeper", "hosts": [hosts], "path": path}
    if zone is not None:
        discovery["label_filters"] = [{"label": "zone", "value": zone}]
    return {"discovery": discovery, "use_previous_backends": False,
            "haproxy": {"port": port, "bind_address": "127.0.0.1"}}  # fmt: skip


def log_since(syn: Synapse) -> Callable[[], str]:
    """The synapse log written from now on."""
    mark = len(syn.process.log_path.read_text(errors="replace"))
    return lambda: syn.process.log_path.read_text(errors="replace")[mark:]


def reload_web(
    syn: Synapse, service: dict[str, Any], until: str = "config_reloaded", timeout: float = 30
) -> Callable[[], str]:
    """SIGHUP with web's block ``service``; the log from the SIGHUP on, once it says
    ``event=<until>``."""
    syn.config["services"]["web"] = service
    syn.write_config()
    since = log_since(syn)
    syn.signal(signal.SIGHUP)
    wait_until(lambda: f"event={until}" in since(), timeout, what=f"{until}\n{since()}")
    return since


def sighup(syn: Synapse, discovery: dict[str, Any]) -> Callable[[], str]:
    """Reload ``web`` with ``discovery``; the log from the SIGHUP on, once it is applied."""
    return reload_web(syn, {**syn.config["services"]["web"], "discovery": discovery}, timeout=60)


def wait_gone(port: int, gone: str, kept: str, timeout: float = 15.0) -> None:
    """Until ``kept`` answered 20 requests with none to ``gone`` in between."""
    deadline = time.monotonic() + timeout
    served: Counter[str] = Counter()
    while time.monotonic() < deadline and served[kept] < 20:
        status, body = http_get(port, timeout=3)
        served[body if status == 200 else f"http-{status}"] += 1
        if body == gone:
            served.clear()
        time.sleep(0.05)
    assert served[kept] == 20, f"{gone} still served: {served}"


def zk_service(zk: ZooKeeperServer, path: str, port: int, **web: Any) -> dict[str, Any]:
    """web's block: ZooKeeper at ``path`` (``discovery=`` adds keys to it), on
    127.0.0.1:``port``, the other keys of ``web`` as given."""
    discovery = {"method": "zookeeper", "hosts": [zk.hosts], "path": path}
    discovery.update(web.pop("discovery", {}))
    return {"discovery": discovery, "haproxy": {"port": port, "bind_address": "127.0.0.1"},
            **web}  # fmt: skip


def serving_two(
    zk: ZooKeeperServer, writer: KazooClient, path: str, backends: Any, **web: Any
) -> tuple[int, Synapse]:
    """``backends`` registered at ``path``; a synapse (not started) serving them as ``web``
    on a port of its own, its HAProxy left running at its stop (a restart adopts it)."""
    for server in backends:
        writer.create(f"{path}/{server.name}_", nerve_record(server), sequence=True,
                      makepath=True)  # fmt: skip
    port = free_port()
    syn = Synapse({"web": zk_service(zk, path, port, **web)})
    syn.config["haproxy"]["managed"]["stop_on_exit"] = False
    syn.write_config()
    return port, syn
